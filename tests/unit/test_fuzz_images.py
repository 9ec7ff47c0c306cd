"""Property tests of image decoding on untrusted bytes: only `InvalidImage` escapes, nothing hangs, memory is bounded.

`make test` runs a bounded number of examples; `make fuzz` runs every `fuzz`-marked test with many more (the `fuzz`
Hypothesis profile, see tests/conftest.py).
"""

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from predictor.imaging.decoding import (
    ImageLimits,
    InvalidImage,
    Preprocessing,
    decode_image,
    image_bytes_from_wire,
    load_pixels,
)

pytestmark = pytest.mark.fuzz

# Small limits keep each example cheap; memory is checked against them.
LIMITS = ImageLimits(max_bytes=1024 * 1024, max_pixels=4_000_000, max_images=4)
PREPROCESSING = Preprocessing()
# Decoding holds at most a few copies of the pixels at 4 bytes each (16-bit and float modes are widened to RGB).
MEMORY_BUDGET = 6 * 4 * LIMITS.max_pixels
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


def _sample(fmt: str) -> bytes:
    rng = np.random.default_rng(len(fmt))
    gradient = np.linspace(0, 255, 48 * 64 * 3).reshape(48, 64, 3)
    pixels = np.clip(gradient + rng.normal(0, 20, gradient.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "JPEG":
        exif = Image.Exif()
        exif[0x0112] = 6  # an orientation tag, so that mutations reach the EXIF parser
        image.save(out, format=fmt, exif=exif)
    else:
        image.save(out, format=fmt)
    return out.getvalue()


SAMPLES = {fmt: _sample(fmt) for fmt in FORMATS}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _peak_tracking() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def check_decoding(data: bytes) -> None:
    """The properties, for any bytes: a bounded RGB picture or `InvalidImage`, within the memory budget."""
    tracking = _peak_tracking()
    before = _status_kib("VmRSS") * 1024 if tracking else 0
    try:
        decoded = decode_image(data, LIMITS, PREPROCESSING)
    except InvalidImage as error:
        assert str(error), "an InvalidImage must say what is wrong"
    else:
        assert decoded.image.mode == "RGB"
        width, height = decoded.full_size
        assert width * height <= LIMITS.max_pixels
        side = PREPROCESSING.input_size
        assert load_pixels(data, LIMITS, PREPROCESSING).shape == (side, side, 3)
    if tracking:
        growth = _status_kib("VmHWM") * 1024 - before
        assert growth < MEMORY_BUDGET, f"decoding took {growth / 2**20:.0f} MiB"


@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data):
    check_decoding(data)


@given(st.sampled_from(FORMATS), st.binary(min_size=1, max_size=1024))
def test_a_real_header_followed_by_arbitrary_bytes(fmt, tail):
    sample = SAMPLES[fmt]
    check_decoding(sample[: min(len(sample), 64)] + tail)


@given(st.sampled_from(FORMATS), st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_truncated_real_images(fmt, fraction):
    sample = SAMPLES[fmt]
    check_decoding(sample[: int(len(sample) * fraction)])


@given(
    st.sampled_from(FORMATS),
    st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=16),
)
def test_mutated_real_images(fmt, mutations):
    data = bytearray(SAMPLES[fmt])
    for where, value in mutations:
        data[int(where * len(data))] = value
    check_decoding(bytes(data))


def _png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    pixels = zlib.compress(b"\x00" * 64)
    idat = struct.pack(">I", len(pixels)) + b"IDAT" + pixels + struct.pack(">I", zlib.crc32(b"IDAT" + pixels))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat


def _gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b",\x00\x00\x00\x00" + b"\x00" * 16


def _bmp(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + b"\x00" * 64


def _jpeg(width: int, height: int) -> bytes:
    sample = SAMPLES["JPEG"]
    at = sample.index(b"\xff\xc0")  # baseline start-of-frame: length, precision, height, width
    return sample[: at + 5] + struct.pack(">HH", height, width) + sample[at + 9 :]


def _webp(width: int, height: int) -> bytes:
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + canvas
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x) + 8) + b"WEBP" + vp8x + b"VP8 " + b"\x00" * 4


DECLARED = {"PNG": (_png, 2**31 - 1), "GIF": (_gif, 65535), "BMP": (_bmp, 2**31 - 1), "JPEG": (_jpeg, 65535)}
DECLARED["WEBP"] = (_webp, 2**24)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(DECLARED)), st.data())
def test_huge_declared_sizes_are_refused_before_the_pixels_are_allocated(fmt, data):
    build, largest = DECLARED[fmt]
    width = data.draw(st.integers(1, largest), label="width")
    height = data.draw(st.integers(1, largest), label="height")
    check_decoding(build(width, height))


@pytest.mark.parametrize("fmt", sorted(DECLARED))
def test_a_declared_size_over_the_pixel_limit_is_refused_by_name(fmt):
    build, largest = DECLARED[fmt]
    with pytest.raises(InvalidImage, match="pixels"):
        decode_image(build(min(largest, 40_000), min(largest, 40_000)), LIMITS)


@given(st.one_of(st.binary(max_size=512), st.text(max_size=512)))
def test_wire_elements_are_image_bytes_or_invalid_image(element):
    try:
        decoded = image_bytes_from_wire(element)
    except InvalidImage:
        return
    assert isinstance(decoded, bytes)


@given(st.binary(max_size=2048), st.booleans())
@example(b"\x04\xc0\x00", True)  # "BMAA": base64 text that starts like a BMP file
@example(b"\x18\x81|\xf5\xa0\x00", True)  # "GIF89aAA": starts like a GIF
def test_base64_text_is_always_decoded_whether_it_arrives_as_text_or_bytes(data, as_bytes):
    encoded = base64.b64encode(data)
    assert image_bytes_from_wire(encoded if as_bytes else encoded.decode()) == data
