"""The `image-search` command. Each subcommand group lives in its own module and registers itself in `parser.py`."""

from predictor.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
