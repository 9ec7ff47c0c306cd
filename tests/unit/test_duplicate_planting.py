"""Copies made to measure near-duplicates (the planted copies that choose `duplicates`' default threshold, and the
evaluation's edited copies) are copies of what the indexer sees; the bench scores the clusters a user gets, not only
the pairs."""

import io
import random

import numpy as np
import pytest
from PIL import Image

from benchmarks.duplicate_threshold import EDITS, co_clustered, planted_copy
from predictor.evaluation.near_duplicates import near_duplicate
from predictor.imaging.decoding import BACKGROUND_RGB


def _cut_out() -> bytes:
    """A red square on transparent pixels whose hidden colour is black, as cut-outs usually store them."""
    pixels = np.zeros((64, 64, 4), dtype=np.uint8)
    pixels[16:48, 16:48] = (200, 30, 30, 255)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="RGBA").save(out, format="PNG")
    return out.getvalue()


COPIES = [(f"planted {edit}", lambda data, edit=edit: planted_copy(data, edit)) for edit in EDITS] + [
    (f"eval copy {seed}", lambda data, seed=seed: near_duplicate(data, random.Random(seed))) for seed in range(4)
]


@pytest.mark.parametrize(("name", "make_copy"), COPIES, ids=[name for name, _ in COPIES])
def test_a_copy_of_a_cut_out_keeps_the_background_the_indexer_sees(name, make_copy):
    copy = np.asarray(Image.open(io.BytesIO(make_copy(_cut_out()))).convert("RGB"), dtype=int)
    height, width = copy.shape[:2]
    # left of the square, clear of a rotated copy's black corners: the white background, give or take the copy's
    # colour edits, never the black the transparent pixels hide
    beside = copy[height // 2, max(1, width // 12)]
    assert BACKGROUND_RGB == (255, 255, 255) and beside.min() >= 200, (name, beside)
    red, green, _ = copy[height // 2 - 2 : height // 2 + 2, width // 2 - 2 : width // 2 + 2].mean(axis=(0, 1))
    assert red - green > 80, (name, "the red square is still there")


def test_a_chain_of_close_pairs_is_one_cluster_even_where_its_ends_are_far_apart():
    angles = np.radians([0.0, 20.0, 40.0, 120.0])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # cos 20 = 0.94 links neighbours; cos 40 = 0.77 does not
    together = co_clustered(vectors @ vectors.T, threshold=0.9)
    pairs = list(zip(*np.triu_indices(4, k=1), strict=True))
    assert {pair for pair, joined in zip(pairs, together, strict=True) if joined} == {(0, 1), (0, 2), (1, 2)}
