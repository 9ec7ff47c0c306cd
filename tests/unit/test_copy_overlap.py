"""Aligned overlaps: two copies cropped differently from one original, neither holding the other, are found alike,
while the other half of a stereo pair and other photos are not."""

import io

import pytest
from PIL import Image, ImageOps

from predictor.imaging.copy_overlap import overlap_score
from predictor.imaging.copy_signature import copy_scores, signature_of
from predictor.imaging.decoding import ImageLimits, decode_image
from predictor.imaging.sample_catalogue import PHOTOS, STEREO_PAIR, photo
from predictor.index.duplicates import DEFAULT_THRESHOLD


def jpeg(image: Image.Image, quality: int = 80) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def signature(data: bytes) -> str:
    return signature_of(decode_image(data, ImageLimits()).image)


def cropped(image: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    width, height = image.size
    return image.crop(
        (round(width * left), round(height * top), round(width * (1 - right)), round(height * (1 - bottom)))
    )


def crop_likeness(first: str, second: str) -> float:
    [forth], [back] = copy_scores(first, [second]), copy_scores(second, [first])
    assert forth is not None and back is not None
    return max(forth, back)


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.fromarray(photo("coffee"))


@pytest.mark.parametrize(
    ("first_crop", "second_crop", "mirrored"),
    [
        ((0.13, 0.02, 0.0, 0.12), (0.0, 0.14, 0.12, 0.01), False),
        ((0.0, 0.0, 0.14, 0.14), (0.14, 0.14, 0.0, 0.0), False),
        ((0.11, 0.0, 0.03, 0.13), (0.02, 0.12, 0.13, 0.0), True),
    ],
)
def test_two_copies_cropped_from_opposite_sides_are_alike_where_no_crop_of_either_matches_the_other(
    coffee, first_crop, second_crop, mirrored
):
    first = signature(jpeg(cropped(coffee, *first_crop), quality=60))
    second_image = cropped(ImageOps.autocontrast(coffee, cutoff=2), *second_crop).resize((160, 120))
    second = signature(jpeg(ImageOps.mirror(second_image) if mirrored else second_image, quality=40))
    assert crop_likeness(first, second) < DEFAULT_THRESHOLD
    aligned = overlap_score(first, second)
    assert aligned is not None and aligned >= DEFAULT_THRESHOLD
    assert overlap_score(second, first) == aligned


def test_the_other_half_of_a_stereo_pair_and_other_photos_stay_below_the_threshold():
    left, right = (signature(jpeg(Image.fromarray(photo(name)))) for name in STEREO_PAIR)
    others = [signature(jpeg(Image.fromarray(photo(name)))) for name in PHOTOS]
    scores = [overlap_score(left, other) for other in [right, *others]]
    assert all(score is not None and score < DEFAULT_THRESHOLD for score in scores), scores


def test_pictures_on_a_flat_background_are_left_to_the_crop_comparison(coffee):
    """On a flat background the alignment would line up outlines rather than pictures."""
    canvas = Image.new("RGB", (400, 300), (255, 255, 255))
    canvas.paste(coffee.resize((240, 180)), (80, 60))
    first, second = (signature(jpeg(cropped(canvas, *crop))) for crop in [(0, 0, 0.1, 0.1), (0.1, 0.1, 0, 0)])
    assert overlap_score(first, second) is None
    photo_copies = [signature(jpeg(cropped(coffee, *crop))) for crop in [(0, 0, 0.1, 0.1), (0.1, 0.1, 0, 0)]]
    assert overlap_score(*photo_copies) is not None


def test_a_missing_or_flat_signature_is_left_to_the_crop_comparison(coffee):
    stored = signature(jpeg(coffee))
    flat = signature(jpeg(Image.new("RGB", (64, 64), (200, 200, 200))))
    assert overlap_score(stored, "") is None
    assert overlap_score("not base64!", stored) is None
    assert overlap_score(stored, flat) is None
