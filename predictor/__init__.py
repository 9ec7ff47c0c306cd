"""Image similarity search on KServe."""

# First, before any module of the package can import pymilvus: see environment.py.
from predictor import environment as _environment  # noqa: F401

__version__ = "0.1.0"
