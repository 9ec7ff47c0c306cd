import base64
import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from predictor.imaging.decoding import (
    DecodedImage,
    ImageLimits,
    InvalidImage,
    Preprocessing,
    decode_image,
    image_bytes_from_wire,
    layout,
    load_pixels,
    preprocess,
)

LIMITS = ImageLimits()


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(data.chelsea())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_every_accepted_format_decodes_to_rgb_of_the_same_size(photo, fmt):
    decoded = decode_image(encode(photo, fmt), LIMITS).image
    assert decoded.mode == "RGB"
    assert decoded.size == photo.size


def test_animated_gif_uses_its_first_frame():
    red, blue = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))
    animated = encode(red, "GIF", save_all=True, append_images=[blue])
    pixels = np.asarray(decode_image(animated, LIMITS).image)
    assert pixels[..., 0].mean() > 200 and pixels[..., 2].mean() < 50


def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rotated = decode_image(encode(photo, "JPEG", exif=exif), LIMITS)
    assert rotated.image.size == rotated.full_size == (photo.height, photo.width)


def test_transparent_pixels_are_composited_on_white():
    transparent = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    pixels = np.asarray(decode_image(encode(transparent, "PNG"), LIMITS).image)
    assert (pixels == 255).all()


@pytest.mark.parametrize(
    "mode",
    ["L", "LA", "P", "CMYK", "I;16", "1"],
)
def test_any_colour_mode_becomes_rgb(photo, mode):
    converted = (
        photo.convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    )
    fmt = "JPEG" if mode == "CMYK" else "PNG" if mode != "1" else "BMP"
    decoded = decode_image(encode(converted, fmt), LIMITS).image
    assert decoded.mode == "RGB"
    assert np.asarray(decoded).std() > 10, "the picture's content survived the conversion"


def test_sixteen_bit_png_keeps_its_contrast():
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (8, 1))
    decoded = np.asarray(decode_image(encode(Image.fromarray(ramp), "PNG"), LIMITS).image)
    assert decoded[..., 0].min() < 5 and decoded[..., 0].max() > 250


def test_too_many_bytes_is_refused(photo):
    with pytest.raises(InvalidImage, match="over the limit"):
        decode_image(encode(photo, "PNG"), ImageLimits(max_bytes=1000))


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("L", (8_000, 8_000)), "PNG")  # 64 Mpx that compresses to about 60 KB
    assert len(bomb) < 1_000_000
    with pytest.raises(InvalidImage, match="pixels.*over the limit|over the limit.*pixels"):
        decode_image(bomb, LIMITS)


def test_truncated_file_is_refused(photo):
    whole = encode(photo, "PNG")
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(whole[: len(whole) // 2], LIMITS)


@pytest.mark.parametrize("payload", [b"", b"hello, not an image", b"%PDF-1.4 not an image either"])
def test_non_images_are_refused(payload):
    with pytest.raises(InvalidImage):
        decode_image(payload, LIMITS)


def test_wire_elements_accept_raw_bytes_and_base64(photo):
    raw = encode(photo, "JPEG")
    assert image_bytes_from_wire(raw) == raw
    assert image_bytes_from_wire(base64.b64encode(raw).decode()) == raw
    assert image_bytes_from_wire(base64.b64encode(raw)) == raw


def test_wire_element_that_is_neither_image_nor_base64_is_refused():
    with pytest.raises(InvalidImage, match="not valid base64"):
        image_bytes_from_wire("this is not base64!")


def test_preprocessing_resizes_shorter_side_then_centre_crops():
    wide = Image.new("RGB", (800, 400))
    wide.paste((255, 0, 0), (0, 0, 200, 400))  # a red band on the left, cropped away by a centre crop
    pixels = preprocess(DecodedImage(wide, wide.size), Preprocessing(resize_shorter_side=256, input_size=224))
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert pixels[..., 0].max() == 0


def test_large_jpeg_decodes_at_reduced_scale_but_still_covers_the_crop(photo):
    big = encode(photo.resize((photo.width * 4, photo.height * 4)), "JPEG")
    reduced = decode_image(big, LIMITS, Preprocessing())
    assert min(reduced.image.size) >= 256 and reduced.reduction > 1
    assert reduced.image.width < photo.width * 4 and reduced.full_size == (photo.width * 4, photo.height * 4)
    assert load_pixels(big, LIMITS, Preprocessing()).shape == (224, 224, 3)


def test_limits_reject_nonsense():
    with pytest.raises(ValueError, match="max_pixels must be greater than 0"):
        ImageLimits(max_pixels=0)


LETTERBOX = Preprocessing(mode="letterbox", input_size=260, pad_color=(10, 200, 30))


def test_letterbox_keeps_the_whole_image_and_pads_the_short_side():
    wide = Image.new("RGB", (800, 400), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 100, 400))  # a blue band on the far left survives
    pixels = preprocess(DecodedImage(wide, wide.size), LETTERBOX)
    assert pixels.shape == (260, 260, 3)
    geometry = layout(800, 400, LETTERBOX)
    assert geometry.size == (260, 130) and geometry.offset == (0, 65)
    assert (pixels[:65] == (10, 200, 30)).all() and (pixels[195:] == (10, 200, 30)).all()
    assert pixels[130, 5, 2] > 200 and pixels[130, 200, 0] > 200


def test_resize_stretches_the_whole_image_to_the_square():
    wide = Image.new("RGB", (800, 400), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 100, 400))
    pixels = preprocess(DecodedImage(wide, wide.size), Preprocessing(mode="resize", input_size=224))
    assert pixels.shape == (224, 224, 3) and pixels[:, :20, 2].min() > 200 and pixels[:, 40:, 0].min() > 200


def test_transparency_is_composited_on_the_configured_background():
    transparent = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    preprocessing = Preprocessing(mode="letterbox", input_size=32, background=(0, 128, 255))
    pixels = load_pixels(encode(transparent, "PNG"), LIMITS, preprocessing)
    assert (pixels == (0, 128, 255)).all()


@pytest.mark.parametrize("mode", ["center-crop", "letterbox", "resize"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_a_jpeg_decoded_at_reduced_scale_has_the_geometry_of_a_full_decode(photo, mode, orientation):
    """The reduced DCT decode must not move the letterbox bars or the crop by even a pixel."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    big = encode(photo.resize((2001, 1333)), "JPEG", quality=95, exif=exif)
    preprocessing = Preprocessing(mode=mode, input_size=240, pad_color=(0, 255, 0), resize_shorter_side=274)
    reduced = decode_image(big, LIMITS, preprocessing)
    full = decode_image(big, LIMITS)
    assert reduced.reduction > 1 and full.reduction == 1 and reduced.full_size == full.full_size
    fast, exact = preprocess(reduced, preprocessing), preprocess(full, preprocessing)
    padding = (exact == (0, 255, 0)).all(axis=2)
    np.testing.assert_array_equal((fast == (0, 255, 0)).all(axis=2), padding)
    assert np.abs(fast.astype(int) - exact)[~padding].mean() < 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "squash"}, "mode must be one of"),
        ({"input_size": 0}, "input_size must be greater than 0"),
        ({"input_size": 300, "resize_shorter_side": 256}, "must be >= input_size"),
        ({"mode": "letterbox", "pad_color": (0, 0, 300)}, "pad_color must be three integers"),
    ],
)
def test_preprocessing_rejects_nonsense(options, message):
    with pytest.raises(ValueError, match=message):
        Preprocessing(**options)
