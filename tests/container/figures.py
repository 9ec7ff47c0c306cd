"""Figures the image tests measure, printed at the end of the run (docs/kubernetes.md records them)."""

FIGURES: list[str] = []
