"""Image similarity search on KServe."""

from importlib import metadata

# First, before any module of the package can import pymilvus: see environment.py.
from predictor import environment as _environment  # noqa: F401

# The version is pyproject.toml's, read from the installed package's metadata; the chart's appVersion agrees with it
# (tests/chart/test_version.py).
try:
    __version__ = metadata.version("image-search")
except metadata.PackageNotFoundError:  # a source tree run without installing it
    __version__ = "0+unknown"
