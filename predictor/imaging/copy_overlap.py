"""How alike two copy signatures are where their pictures overlap: two copies cropped differently from one original,
where neither holds the whole of the other, so that no crop of one matches the whole of the other
(copy_signature.py's comparison).

Both pictures are taken as crops of one original. Along each axis, one picture's frame is the other's scaled by `w`
(0.7 to 1/0.7) and shifted by `d` (up to 30% of a side), and the two share the span where their frames overlap,
which must cover at least `MIN_OVERLAP` of each. The best of a coarse grid of those four numbers, compared at 8 x 8,
is refined by a local search at 24 x 24, and the refined overlap is scored at the signature's full 48 x 48. That last
step is what keeps two photographs of one scene apart (the two halves of a stereo pair, taken a few centimetres
apart): at 24 x 24 their best overlap correlates as well as two copies do, while at 48 x 48 the parallax between
near and far things costs them points that two copies of one photograph do not lose. Mirrored copies are compared
mirrored. Pictures that stand on one flat colour (sprites, cut-outs, product shots on white) are not aligned: there
the alignment lines up outlines rather than pictures, and in a sample of 2,000 game sprites and terrain tiles it
aligned 6 pairs a row for nothing but more unrelated pictures joined. Measured on planted copies in
docs/search-index.md ("Near-duplicate clusters").
"""

import functools
import itertools

import numpy as np

from predictor.imaging.copy_signature import FLAT, STORED, area_maps, foreground_of, pixels_of

__all__ = ["overlap_score"]

MIN_OVERLAP = 0.6
SCALES = np.exp(np.linspace(np.log(0.7), np.log(1 / 0.7), 7))
SHIFTS = np.linspace(-0.3, 0.3, 9)
COARSE, FINE = 8, 24
# Local search steps: a relative change of scale and a shift, each a share of a side.
STEPS = ((0.04, 0.02), (0.02, 0.01), (0.01, 0.005))
MAX_MOVES = 6
# A coarse likeness below this is not refined: no planted copy that refining lifted over the threshold started lower
# than 0.80, and most pairs of different pictures do.
COARSE_FLOOR = 0.8

Axis = tuple[float, float]  # scale w and shift d: the second frame spans [d, d + w] in the first's units


def _spans(axis: Axis) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The overlap's span in each picture's frame (shares of a side), or None when it is too small in either."""
    w, d = axis
    low, high = max(0.0, d), min(1.0, d + w)
    first, second = (low, high), ((low - d) / w, (high - d) / w)
    if first[1] - first[0] < MIN_OVERLAP or second[1] - second[0] < MIN_OVERLAP:
        return None
    return first, second


def _views(pixels: np.ndarray, row_maps: np.ndarray, column_maps: np.ndarray) -> np.ndarray:
    """Every (row span, column span) view of the picture, normalised: [rows, columns, cells * cells]."""
    rows, cells, _ = row_maps.shape
    columns = column_maps.shape[0]
    grid = (row_maps.reshape(-1, STORED) @ pixels) @ column_maps.reshape(-1, STORED).T
    views = grid.reshape(rows, cells, columns, cells).transpose(0, 2, 1, 3).reshape(rows, columns, -1)
    views = views - views.mean(axis=2, keepdims=True)
    return views / np.maximum(np.linalg.norm(views, axis=2, keepdims=True), 1e-6)


def _likeness(first: np.ndarray, second: np.ndarray, rows: list[Axis], columns: list[Axis], cells: int) -> np.ndarray:
    """Correlation of the two pictures' overlaps for every pair of a row axis and a column axis: [rows, columns]."""
    row_spans = [_spans(axis) for axis in rows]
    column_spans = [_spans(axis) for axis in columns]
    usable_rows = [i for i, spans in enumerate(row_spans) if spans]
    usable_columns = [i for i, spans in enumerate(column_spans) if spans]
    likeness = np.full((len(rows), len(columns)), -1.0, dtype=np.float32)
    if not usable_rows or not usable_columns:
        return likeness

    def maps(spans: list, used: list[int], side: int) -> np.ndarray:
        return area_maps(np.array([spans[i][side] for i in used]), cells)

    views = [
        _views(pixels, maps(row_spans, usable_rows, side), maps(column_spans, usable_columns, side))
        for side, pixels in enumerate((first, second))
    ]
    likeness[np.ix_(usable_rows, usable_columns)] = np.einsum("rck,rck->rc", *views)
    return likeness


@functools.cache
def _grid() -> tuple[list[Axis], np.ndarray, np.ndarray]:
    """The coarse alignments of one axis, and their spans' COARSE-cell maps in each picture's frame."""
    axes = [(float(w), float(d)) for w in SCALES for d in SHIFTS if _spans((float(w), float(d)))]
    spans = [_spans(axis) for axis in axes]
    first, second = (area_maps(np.array([pair[side] for pair in spans if pair]), COARSE) for side in (0, 1))
    return axes, first, second


def _neighbourhood(axis: Axis, step: tuple[float, float]) -> list[Axis]:
    w, d = axis
    return [(w * (1 + dw * step[0]), d + dd * step[1]) for dw, dd in itertools.product((-1, 0, 1), repeat=2)]


def _refined(first: np.ndarray, second: np.ndarray, rows: Axis, columns: Axis) -> tuple[Axis, Axis]:
    """The local optimum around a starting alignment at FINE cells a side, one axis at a time."""
    for step in STEPS:
        for _ in range(MAX_MOVES):
            row_axes = _neighbourhood(rows, step)
            best_row = int(np.argmax(_likeness(first, second, row_axes, [columns], FINE)[:, 0]))
            rows = row_axes[best_row]
            column_axes = _neighbourhood(columns, step)
            best_column = int(np.argmax(_likeness(first, second, [rows], column_axes, FINE)[0]))
            columns = column_axes[best_column]
            if best_row == best_column == 4:  # the centre: no move improves
                break
    return rows, columns


def _aligned(first: np.ndarray, second: np.ndarray) -> float:
    """The likeness of the best alignment of the two pictures, the second as it is or mirrored."""
    axes, first_maps, second_maps = _grid()
    first_views = _views(first, first_maps, first_maps)
    best, start, orientation = -1.0, (0, 0), second
    for candidate in (second, second[:, ::-1].copy()):
        coarse = np.einsum("rck,rck->rc", first_views, _views(candidate, second_maps, second_maps))
        row, column = np.unravel_index(int(np.argmax(coarse)), coarse.shape)
        if coarse[row, column] > best:
            best, start, orientation = float(coarse[row, column]), (int(row), int(column)), candidate
    if best < COARSE_FLOOR:
        return best
    rows, columns = _refined(first, orientation, axes[start[0]], axes[start[1]])
    return float(_likeness(first, orientation, [rows], [columns], STORED)[0, 0])


def overlap_score(first: str, second: str) -> float | None:
    """How alike two signatures' pictures are where they overlap best, mirrored or not, from -1 to 1, the same both
    ways round; None where either is not a signature, is one flat colour or stands on one (copy_scores compares
    those)."""
    first_pixels, second_pixels = pixels_of(first), pixels_of(second)
    if first_pixels is None or second_pixels is None or min(first_pixels.std(), second_pixels.std()) < FLAT:
        return None
    if foreground_of(first_pixels) is not None or foreground_of(second_pixels) is not None:
        return None
    # The grids are not symmetric between the two frames: one order for a pair, whichever way it is asked.
    if second < first:
        first_pixels, second_pixels = second_pixels, first_pixels
    return _aligned(first_pixels, second_pixels)
