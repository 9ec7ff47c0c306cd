"""Image similarity search on KServe."""

__version__ = "0.1.0"
