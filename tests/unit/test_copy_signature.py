"""Copy signatures: the edits people make to a copy keep its signature alike to the original's, a different photo of
the same scene does not, and a row without a signature is told apart rather than scored."""

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from benchmarks.duplicate_threshold import EDITS, planted_copy
from predictor.imaging.copy_signature import SIGNATURE_LENGTH, STORED, copy_scores, signature_of
from predictor.imaging.decoding import ImageLimits, decode_image
from predictor.imaging.sample_catalogue import PHOTOS, STEREO_PAIR, photo
from predictor.index.duplicates import DEFAULT_THRESHOLD


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


def signature(data: bytes) -> str:
    return signature_of(decode_image(data, ImageLimits()).image)


def likeness(first: str, second: str) -> float:
    """A pair's score as `image-search duplicates` gets it, visiting both rows: the larger of both ways round."""
    [forth], [back] = copy_scores(first, [second]), copy_scores(second, [first])
    assert forth is not None and back is not None
    return max(forth, back)


@pytest.fixture(scope="module")
def coffee() -> bytes:
    return jpeg(Image.fromarray(photo("coffee")))


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_copy_scores_above_the_threshold(coffee, edit):
    assert likeness(signature(coffee), signature(planted_copy(coffee, edit))) >= DEFAULT_THRESHOLD


def test_a_mirrored_copy_cropped_at_a_corner_still_scores_above_the_threshold(coffee):
    image = Image.open(io.BytesIO(coffee))
    width, height = image.size
    corner = ImageOps.mirror(image.crop((0, 0, int(width * 0.8), int(height * 0.8))))
    assert likeness(signature(jpeg(corner)), signature(coffee)) >= DEFAULT_THRESHOLD


def test_other_photos_and_the_other_half_of_a_stereo_pair_score_below_it():
    left, right = (signature(jpeg(Image.fromarray(photo(name)))) for name in STEREO_PAIR)
    others = [signature(jpeg(Image.fromarray(photo(name)))) for name in PHOTOS]
    scores = [likeness(left, other) for other in [right, *others]]
    assert all(score < DEFAULT_THRESHOLD for score in scores), scores
    [itself] = copy_scores(left, [left])
    assert itself == pytest.approx(1.0, abs=1e-5)


def on_white(name: str) -> bytes:
    """A photo pasted in the middle of a white canvas, as product shots and cut-outs stand on their background."""
    canvas = Image.new("RGB", (400, 300), (255, 255, 255))
    canvas.paste(Image.fromarray(photo(name)).resize((160, 120)), (120, 90))
    return jpeg(canvas)


@pytest.mark.parametrize(
    "pair", [("coffee", "chelsea"), ("coffee", "astronaut"), ("camera", "coins"), ("moon", "coffee")]
)
def test_different_pictures_on_one_white_background_are_not_copies_where_their_edited_copies_are(pair):
    first, second = (on_white(name) for name in pair)
    assert likeness(signature(first), signature(second)) < DEFAULT_THRESHOLD
    for edit in EDITS:
        assert likeness(signature(first), signature(planted_copy(first, edit))) >= DEFAULT_THRESHOLD, edit


def test_a_crop_is_found_among_the_crops_of_its_original_not_the_other_way_round(coffee):
    original, cropped = signature(coffee), signature(planted_copy(coffee, "cropped"))
    [forth], [back] = copy_scores(original, [cropped]), copy_scores(cropped, [original])
    assert forth is not None and back is not None
    assert forth >= DEFAULT_THRESHOLD > back


def test_a_missing_or_damaged_signature_is_no_score(coffee):
    stored = signature(coffee)
    assert len(stored) == SIGNATURE_LENGTH
    assert copy_scores(stored, ["", "not base64!", stored[:100]]) == [None, None, None]
    assert copy_scores("", [stored]) == [None]


def test_flat_pictures_are_alike_by_their_brightness():
    white, also_white, black = (
        signature(jpeg(Image.new("RGB", size, colour)))
        for size, colour in [((64, 64), (255, 255, 255)), ((100, 40), (253, 253, 253)), ((64, 64), (0, 0, 0))]
    )
    [same, different] = copy_scores(white, [also_white, black])
    assert same is not None and same >= DEFAULT_THRESHOLD
    assert different is not None and different < DEFAULT_THRESHOLD


def test_every_score_is_a_correlation_even_where_a_crop_is_one_flat_colour():
    # A page with one small mark, against a texture: the page's crops that miss the mark are one flat colour where
    # they are weighed, and such crops once scored in the thousands.
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(300):
        page = np.full((STORED, STORED), 250.0)
        top, left = rng.integers(0, STORED - 8, 2)
        height, width = rng.integers(2, 8, 2)
        page[top : top + height, left : left + width] = rng.uniform(0, 200)
        texture = rng.uniform(0, 255) + rng.normal(0, rng.uniform(5, 60), (STORED, STORED))
        first, second = (
            base64.b64encode(np.clip(a, 0, 255).astype(np.uint8).tobytes()).decode() for a in (page, texture)
        )
        scores += copy_scores(first, [second]) + copy_scores(second, [first])
    assert all(score is not None and -1.0 <= score < DEFAULT_THRESHOLD for score in scores)
