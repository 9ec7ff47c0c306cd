"""The modes of --compile, in a module without torch so that the CLI can name them without loading it.

`on` compiles the network on a CPU, `off` never, and `auto` where it pays: a server always, a batch command from
predictor.embedding.compilation.WORTH_COMPILING_IMAGES images.
"""

COMPILE_CHOICES = ("auto", "on", "off")
