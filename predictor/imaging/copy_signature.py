"""A picture's copy signature, and how alike two signatures are: near-duplicate detection that the embedding alone
cannot do.

The embedding places pictures by what they show, so it scores a 10% crop of a photo below a different photo of the
same scene (the two halves of a stereo pair). The signature keeps the picture's layout instead: a 48 x 48 grey
thumbnail of the whole picture (as the indexer decoded it, squashed to a square), stored at index time. Two
signatures are compared by normalised cross-correlation at 24 x 24: crops of one picture (70 to 100% of each side at
five positions along it, the two sides' shares at most one step of 10% apart) against the whole of the other, as it
is and mirrored, so that resizing, re-encoding, brightness and contrast (the normalisation removes gain and offset),
cropping and mirroring keep a copy's score high. Rotation, and crops between the compared ones, lower it. A copy may
be a crop of its original or the other way round, so a pair's likeness is the larger of the two ways:
`image-search duplicates` compares each row's crops with its candidates' wholes, and gets the other way when it
comes to the candidate's row.

A picture that stands on one flat colour (a sprite, a cut-out, a product shot on white) is compared only where one of
the two is not background: a plain correlation there scores the outline against the background, which different
pictures share (two photographs pasted at one place on a white page correlate at 0.91 to 0.98).

`image-search duplicates` asks the embedding for candidates and the signatures for the verdict; the scales, the
sizes and the default threshold were measured on planted copies (docs/search-index.md, "Near-duplicate clusters").
"""

import base64
import functools

import numpy as np
from PIL import Image

__all__ = ["SIGNATURE_LENGTH", "area_maps", "copy_scores", "foreground_of", "pixels_of", "signature_of"]

STORED = 48
COMPARED = 24
CROPS = (0.9, 0.8, 0.7)
POSITIONS = 5
# Grey levels of standard deviation below which a picture is one flat colour: correlation would score its noise, so
# two flat pictures are compared by their brightness instead.
FLAT = 2.0
# A picture stands on a flat background when this share of its outermost RING pixels is within BACKGROUND_TOLERANCE
# grey levels of their median.
RING = 2
BACKGROUND_SHARE = 0.9
BACKGROUND_TOLERANCE = 6.0
# Crops (with the orientation of the other picture) weighed where a picture stands on a flat background.
WEIGHED_CROPS = 8
# base64 of STORED * STORED bytes.
SIGNATURE_LENGTH = 4 * ((STORED * STORED + 2) // 3)


def signature_of(image: Image.Image) -> str:
    """The signature of a decoded picture, as text for a VARCHAR field."""
    thumbnail = image.convert("L").resize((STORED, STORED), Image.Resampling.BOX)
    return base64.b64encode(np.asarray(thumbnail, dtype=np.uint8).tobytes()).decode("ascii")


def pixels_of(signature: str) -> np.ndarray | None:
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        return None
    if len(raw) != STORED * STORED:
        return None
    return np.frombuffer(raw, dtype=np.uint8).reshape(STORED, STORED).astype(np.float32)


def area_maps(spans: np.ndarray, cells: int) -> np.ndarray:
    """[spans, cells, STORED] weights that average each span of a side ([start, end) as shares of it, one per row of
    `spans`) into `cells` equal cells."""
    starts, lengths = spans[:, :1, None], (spans[:, 1:, None] - spans[:, :1, None])
    edges = STORED * (starts + lengths * np.arange(cells + 1)[None, :, None] / cells)
    low, high = edges[:, :-1], edges[:, 1:]
    pixel = np.arange(STORED)[None, None, :]
    overlap = np.clip(np.minimum(high, pixel + 1) - np.maximum(low, pixel), 0, None)
    return (overlap / np.maximum(overlap.sum(axis=2, keepdims=True), 1e-9)).astype(np.float32)


@functools.cache
def _maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every 1-D span a view samples (the whole side first), and the row and column span of each view."""
    spans, shares = [(0.0, float(STORED))], [0]
    for share, crop in enumerate(CROPS, start=1):
        width = STORED * crop
        spans += [(offset, width) for offset in np.linspace(0.0, STORED - width, POSITIONS)]
        shares += [share] * POSITIONS
    pairs = [
        (row, column)
        for row in range(len(spans))
        for column in range(len(spans))
        if abs(shares[row] - shares[column]) <= 1
    ]
    maps = area_maps(np.array([(start, start + width) for start, width in spans]) / STORED, COMPARED)
    rows, columns = (np.array(side) for side in zip(*pairs, strict=True))
    return maps, rows, columns


def _normalised(views: np.ndarray) -> np.ndarray:
    flat = views.reshape(len(views), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)


def _views(pixels: np.ndarray) -> np.ndarray:
    """Every crop the comparison tries (the whole picture first), one per row, as they are."""
    maps, rows, columns = _maps()
    grid = (maps @ pixels)[:, None] @ maps.transpose(0, 2, 1)[None]  # [row span, column span]
    return grid[rows, columns].reshape(len(rows), -1)


def _whole_views(pixels: np.ndarray) -> np.ndarray:
    """The whole picture and its mirror image, one per row: a mirrored crop against a whole picture scores as the
    crop against that picture mirrored."""
    whole = _maps()[0][0]
    view = whole @ pixels @ whole.T
    return np.stack([view.ravel(), view[:, ::-1].ravel()])


def foreground_of(pixels: np.ndarray) -> np.ndarray | None:
    """Where a picture that stands on one flat colour (nearly all of its outermost RING pixels within
    BACKGROUND_TOLERANCE grey levels of one another: a sprite, a cut-out, a product shot on white) is not that colour,
    with one pixel of margin, as 0/1 weights; None for a picture that does not stand on one."""
    ring = np.concatenate(
        [
            pixels[:RING].ravel(),
            pixels[-RING:].ravel(),
            pixels[RING:-RING, :RING].ravel(),
            pixels[RING:-RING, -RING:].ravel(),
        ]
    )
    level = np.median(ring)
    if np.mean(np.abs(ring - level) <= BACKGROUND_TOLERANCE) < BACKGROUND_SHARE:
        return None
    content = (np.abs(pixels - level) > BACKGROUND_TOLERANCE).astype(np.float32)
    grown = content.copy()
    grown[1:] = np.maximum(grown[1:], content[:-1])
    grown[:-1] = np.maximum(grown[:-1], content[1:])
    margin = grown.copy()
    margin[:, 1:] = np.maximum(margin[:, 1:], grown[:, :-1])
    margin[:, :-1] = np.maximum(margin[:, :-1], grown[:, 1:])
    return margin


def _weighted_correlation(first: np.ndarray, second: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Correlation of each row of `first` with `second`, every cell counted by its weight, from -1 to 1. Centred
    before multiplying: sums of products of raw grey levels lose the difference between two nearly equal terms in
    float32, and a crop that is one flat colour where it is weighed then scored in the thousands."""
    total = np.maximum(weights.sum(axis=-1, keepdims=True), 1e-6)
    first = first - (weights * first).sum(axis=-1, keepdims=True) / total
    second = second - (weights * second).sum(axis=-1, keepdims=True) / total
    covariance = (weights * first * second).sum(axis=-1)
    variances = (weights * first * first).sum(axis=-1) * (weights * second * second).sum(axis=-1)
    return np.clip(covariance / np.sqrt(np.maximum(variances, 1e-6)), -1.0, 1.0)


class _Crops:
    """One picture's crops, made once for all the pictures it is compared with."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.views = _views(pixels)
        self.normalised = _normalised(self.views)
        foreground = foreground_of(pixels)
        self.weights = None if foreground is None else _views(foreground)

    def likeness(self, other: np.ndarray) -> float:
        """The best correlation of a crop with the whole of `other`, mirrored or not. Where either picture stands on
        a flat background, only the cells where one of them is not background count: there a plain correlation
        scores how alike the outlines are, which different pictures on one background share."""
        other_foreground = foreground_of(other)
        wholes = _whole_views(other)
        plain = self.normalised @ _normalised(wholes).T  # [crop, whole or mirror]
        if self.weights is None and other_foreground is None:
            return float(plain.max())
        # The best crops by the plain correlation are the ones worth weighing: weighing all 186 both ways costs ten
        # times the plain comparison.
        best = np.argsort(plain, axis=None)[-WEIGHED_CROPS:]
        crops, mirrors = np.unravel_index(best, plain.shape)
        own = np.ones_like(self.views[crops]) if self.weights is None else self.weights[crops]
        theirs = np.ones_like(wholes) if other_foreground is None else _whole_views(other_foreground)
        weights = np.maximum(own, theirs[mirrors])
        return float(_weighted_correlation(self.views[crops], wholes[mirrors], weights).max())


def copy_scores(signature: str, others: list[str]) -> list[float | None]:
    """How well the best crop of `signature`'s picture matches the whole of each of `others`, mirrored or not, from -1
    to 1 (1: the same picture); None where either is not a signature (an empty one: a row indexed before signatures
    were stored). One way round only: a pair's likeness is the larger of both."""
    pixels = pixels_of(signature)
    if pixels is None:
        return [None] * len(others)
    flat = pixels.std() < FLAT
    crops: _Crops | None = None
    scores: list[float | None] = []
    for other in others:
        other_pixels = pixels_of(other)
        if other_pixels is None:
            scores.append(None)
        elif flat and other_pixels.std() < FLAT:
            scores.append(1.0 - abs(float(pixels.mean()) - float(other_pixels.mean())) / 255.0)
        else:
            crops = _Crops(pixels) if crops is None else crops
            scores.append(crops.likeness(other_pixels))
    return scores
