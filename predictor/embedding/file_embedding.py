"""Image files to unit vectors through the CPU decode path and one backbone, as the indexer does it: what
evaluation measures and what a projection is fitted on."""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from predictor.imaging.decoding import ImageLimits, load_pixels

Embedder = Callable[[list[Path]], np.ndarray]


def backbone_embedder(backbone, batch_size: int = 16) -> Embedder:
    """Files -> unit vectors through the CPU decode path and one backbone, as the indexer does it."""
    limits, preprocessing = ImageLimits(), backbone.spec.preprocessing

    def embed(paths: list[Path]) -> np.ndarray:
        chunks = [np.zeros((0, backbone.dimension), dtype=np.float32)]
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            pixels = np.stack([load_pixels(path.read_bytes(), limits, preprocessing) for path in batch])
            chunks.append(backbone.run(pixels).embeddings)
        return np.concatenate(chunks)

    return embed
