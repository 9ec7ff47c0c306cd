"""A picture's copy signature, and how alike two signatures are: near-duplicate detection that the embedding alone
cannot do.

The embedding places pictures by what they show, so it scores a 10% crop of a photo below a different photo of the
same scene (the two halves of a stereo pair). The signature keeps the picture's layout instead: a 48 x 48 grey
thumbnail of the whole picture (as the indexer decoded it, squashed to a square), stored at index time. Two
signatures are compared by normalised cross-correlation at 24 x 24, the first signature's whole picture against
crops of the second one (70 to 100% of each side, centred or at an edge or a corner, each also mirrored) and the
other way round, so that resizing, re-encoding, brightening or contrast (the normalisation removes gain and offset),
cropping and mirroring keep a copy's score high. Rotation and a crop that changes the aspect ratio lower it.

`image-search duplicates` asks the embedding for candidates and the signatures for the verdict; the scales, the
sizes and the default threshold were measured on planted copies (docs/search-index.md, "Near-duplicate clusters").
"""

import base64
import functools

import numpy as np
from PIL import Image

__all__ = ["SIGNATURE_LENGTH", "copy_scores", "signature_of"]

STORED = 48
COMPARED = 24
CROPS = (0.9, 0.8, 0.7)
# Grey levels of standard deviation below which a picture is one flat colour: correlation would score its noise, so
# two flat pictures are compared by their brightness instead.
FLAT = 2.0
# base64 of STORED * STORED bytes.
SIGNATURE_LENGTH = 4 * ((STORED * STORED + 2) // 3)


def signature_of(image: Image.Image) -> str:
    """The signature of a decoded picture, as text for a VARCHAR field."""
    thumbnail = image.convert("L").resize((STORED, STORED), Image.Resampling.BOX)
    return base64.b64encode(np.asarray(thumbnail, dtype=np.uint8).tobytes()).decode("ascii")


def _pixels(signature: str) -> np.ndarray | None:
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        return None
    if len(raw) != STORED * STORED:
        return None
    return np.frombuffer(raw, dtype=np.uint8).reshape(STORED, STORED).astype(np.float32)


def _area_map(start: float, width: float) -> np.ndarray:
    """COMPARED x STORED weights that average the source span [start, start + width) into COMPARED equal cells."""
    edges = start + width * np.arange(COMPARED + 1) / COMPARED
    low, high = edges[:-1, None], edges[1:, None]
    pixel = np.arange(STORED)[None, :]
    overlap = np.clip(np.minimum(high, pixel + 1) - np.maximum(low, pixel), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


@functools.cache
def _maps() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Every 1-D span a view samples (the whole side first), and the (rows, columns) span pairs of the views."""
    spans = [(0.0, float(STORED))]
    pairs = [(0, 0)]
    for crop in CROPS:
        width = STORED * crop
        first = len(spans)
        spans += [(0.0, width), ((STORED - width) / 2, width), (STORED - width, width)]
        pairs += [(first + row, first + column) for row in range(3) for column in range(3)]
    return np.stack([_area_map(start, width) for start, width in spans]).astype(np.float32), pairs


def _normalised(views: np.ndarray) -> np.ndarray:
    flat = views.reshape(len(views), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)


def _views(pixels: np.ndarray) -> np.ndarray:
    """The whole picture first, then every crop, then each of them mirrored; normalised, one per row."""
    maps, pairs = _maps()
    rows = maps @ pixels  # each span's rows, over every source column
    grid = rows[:, None] @ maps.transpose(0, 2, 1)[None]  # [row span, column span]
    views = np.stack([grid[row, column] for row, column in pairs])
    return _normalised(np.concatenate([views, views[:, :, ::-1]]))


def copy_scores(signature: str, others: list[str]) -> list[float | None]:
    """How alike `signature` is to each of `others`, from -1 to 1 (1: the same picture); None where either is not a
    signature (an empty one: a row indexed before signatures were stored)."""
    pixels = _pixels(signature)
    if pixels is None:
        return [None] * len(others)
    views = _views(pixels)
    scores: list[float | None] = []
    for other in others:
        other_pixels = _pixels(other)
        if other_pixels is None:
            scores.append(None)
            continue
        if pixels.std() < FLAT and other_pixels.std() < FLAT:
            scores.append(1.0 - abs(float(pixels.mean()) - float(other_pixels.mean())) / 255.0)
            continue
        other_views = _views(other_pixels)
        scores.append(float(max((views @ other_views[0]).max(), (other_views @ views[0]).max())))
    return scores
