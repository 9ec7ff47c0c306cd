"""Which files are images, and the id an image's bytes get: shared by indexing, evaluation and the registry."""

import hashlib

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})


def content_id(data: bytes) -> str:
    """A row's id when no manifest names it: the SHA-256 of the file, so re-indexing the same file finds its row."""
    return hashlib.sha256(data).hexdigest()
