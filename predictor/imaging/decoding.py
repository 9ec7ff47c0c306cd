"""Turning untrusted encoded image files into the model's input: limits, decode, orientation, RGB, geometry.

Pure functions of bytes in, pixels out, so they are easy to test and fuzz. Normalisation to the model's mean/std
happens on the model's device (see backbone.py): shipping uint8 pixels there is four times cheaper than floats.
"""

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Multi-picture JPEGs from phones (MPO) open through the JPEG decoder.
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP"})
BACKGROUND_RGB = (255, 255, 255)
EXIF_ORIENTATION = 0x0112
# EXIF orientations that turn the picture a quarter: the stored width is the displayed height.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# Signatures of the formats we accept, used to tell raw image bytes from base64 text.
_MAGIC_PREFIXES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
# Every supported format's header holds bytes outside the base64 alphabet within this many bytes.
_HEADER_BYTES = 256
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class InvalidImage(ValueError):
    """The caller sent something that is not an acceptable image; the message says what is wrong."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_images: int = 64

    def __post_init__(self) -> None:
        for field in ("max_bytes", "max_pixels", "max_images"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be greater than 0, got {getattr(self, field)}")


PREPROCESSING_MODES = ("center-crop", "letterbox", "resize")
RGB = tuple[int, int, int]


def _check_rgb(name: str, value: tuple) -> None:
    if len(value) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in value):
        raise ValueError(f"{name} must be three integers 0..255, got {value!r}")


@dataclass(frozen=True)
class Preprocessing:
    """Geometry of the model input; mean/std live with the model because they are applied on its device.

    - `center-crop`: shorter side to `resize_shorter_side`, then the centred `input_size` square (ImageNet's way);
    - `letterbox`: the whole image scaled to fit the square and padded with `pad_color`;
    - `resize`: the whole image stretched to the square.
    Transparent pixels are composited onto `background` first.
    """

    mode: str = "center-crop"
    input_size: int = 224
    resize_shorter_side: int = 256
    pad_color: RGB = BACKGROUND_RGB
    background: RGB = BACKGROUND_RGB

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESSING_MODES:
            raise ValueError(f"preprocessing mode must be one of {', '.join(PREPROCESSING_MODES)}, got {self.mode!r}")
        if self.input_size <= 0:
            raise ValueError(f"input_size must be greater than 0, got {self.input_size}")
        if self.mode == "center-crop" and self.resize_shorter_side < self.input_size:
            raise ValueError(
                f"resize_shorter_side ({self.resize_shorter_side}) must be >= input_size ({self.input_size}) "
                "for a centre crop"
            )
        _check_rgb("pad_color", self.pad_color)
        _check_rgb("background", self.background)

    def to_json(self) -> dict:
        fields = {"mode": self.mode, "input_size": self.input_size}
        if self.mode == "center-crop":
            fields["resize_shorter_side"] = self.resize_shorter_side
        if self.mode == "letterbox":
            fields["pad_color"] = list(self.pad_color)
        return {**fields, "background": list(self.background)}


@dataclass(frozen=True)
class Layout:
    """Where the model input comes from and where it goes: every decoder path follows this one geometry."""

    box: tuple[float, float, float, float]  # source region (left, top, right, bottom) in full-resolution pixels
    size: tuple[int, int]  # (width, height) that region is resized to
    offset: tuple[int, int]  # its top-left corner on the input_size square; the rest is pad_color


def layout(width: int, height: int, preprocessing: Preprocessing) -> Layout:
    """The geometry for an upright image of `width` x `height` full-resolution pixels."""
    side = preprocessing.input_size
    if preprocessing.mode == "center-crop":
        scale = preprocessing.resize_shorter_side / min(width, height)
        new_width, new_height = max(round(width * scale), 1), max(round(height * scale), 1)
        left, top = (new_width - side) // 2, (new_height - side) // 2
        box = (left / scale, top / scale, (left + side) / scale, (top + side) / scale)
        return Layout(box, (side, side), (0, 0))
    whole = (0.0, 0.0, float(width), float(height))
    if preprocessing.mode == "resize":
        return Layout(whole, (side, side), (0, 0))
    scale = side / max(width, height)
    new_width, new_height = min(max(round(width * scale), 1), side), min(max(round(height * scale), 1), side)
    return Layout(whole, (new_width, new_height), ((side - new_width) // 2, (side - new_height) // 2))


def draft_request(width: int, height: int, preprocessing: Preprocessing) -> tuple[int, int]:
    """The smallest whole-image size that still has every pixel the layout samples: a JPEG may decode that small."""
    side = preprocessing.input_size
    if preprocessing.mode == "center-crop":
        scale = preprocessing.resize_shorter_side / min(width, height)
    elif preprocessing.mode == "letterbox":
        scale = side / max(width, height)
    else:
        return (side, side)
    return (max(round(width * scale), 1), max(round(height * scale), 1))


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # upright RGB; a large JPEG may be decoded at 1/2, 1/4 or 1/8 of its size
    full_size: tuple[int, int]  # upright (width, height) at full resolution, which fixes the geometry
    reduction: int = 1  # full-resolution pixels per decoded pixel


def looks_like_image(data: bytes) -> bool:
    return data.startswith(_MAGIC_PREFIXES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _is_base64_text(data: bytes) -> bool:
    # A real file has binary bytes within its header; reading past it cost a copy of the whole file (1.5 ms of the
    # event loop for a phone photo).
    return not data[:_HEADER_BYTES].translate(None, _BASE64_ALPHABET)


def image_bytes_from_wire(element: bytes | str) -> bytes:
    """One BYTES tensor element or JSON string: raw image bytes pass through, base64 text is decoded.

    Base64 text can begin like a signature ("BM", "GIF89a"), but a real file has binary bytes after it.
    """
    if isinstance(element, bytes) and looks_like_image(element) and not _is_base64_text(element):
        return element
    try:
        text = element.decode("ascii", errors="strict") if isinstance(element, bytes) else element
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidImage(f"not an image file and not valid base64: {error}") from None


def to_rgb(image: Image.Image, background: RGB = BACKGROUND_RGB) -> Image.Image:
    """The picture as it is embedded: 8-bit RGB, transparent pixels laid on `background`."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the actual range the sensor used.
        pixels = np.asarray(image, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def decode_image(data: bytes, limits: ImageLimits, preprocessing: Preprocessing | None = None) -> DecodedImage:
    """Decode one untrusted image file to an upright RGB picture, refusing anything over the limits.

    With `preprocessing`, a JPEG decodes at the smallest reduced DCT scale that still holds every pixel the model
    input samples (much faster for big photos, and lossless for us), and transparency is composited onto its
    background colour.
    """
    if not data:
        raise InvalidImage("empty image")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"image is {len(data)} bytes, over the limit of {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(ACCEPTED_FORMATS))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise InvalidImage(f"image is {width}x{height} pixels, over the limit of {limits.max_pixels}")
            reduction = 1
            if image.format in ("JPEG", "MPO") and preprocessing is not None:
                orientation = image.getexif().get(EXIF_ORIENTATION, 1)
                upright = (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)
                wanted = draft_request(*upright, preprocessing)
                if orientation in _SWAPPING_ORIENTATIONS:
                    wanted = (wanted[1], wanted[0])
                drafted = image.draft("RGB", wanted)
                if drafted is not None:
                    reduction = round(width / drafted[1][2])
            image.seek(0)
            image.load()
            stored = image.size
            oriented = ImageOps.exif_transpose(image) or image
            turned = oriented.size != stored
            full_size = (height, width) if turned else (width, height)
            background = preprocessing.background if preprocessing is not None else BACKGROUND_RGB
            return DecodedImage(to_rgb(oriented, background), full_size, reduction)
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImage(f"image has too many pixels, over the limit of {limits.max_pixels}: {error}") from None
    except UnidentifiedImageError:
        # Pillow's own message names only the in-memory buffer it read ("<_io.BytesIO object at 0x...>").
        raise InvalidImage(f"not a supported image: not one of {', '.join(sorted(ACCEPTED_FORMATS))}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise InvalidImage(f"corrupt or truncated image: {error}") from None


def preprocess(decoded: DecodedImage, preprocessing: Preprocessing) -> np.ndarray:
    """The model input of one decoded image, by `layout()`: HWC uint8 RGB, `input_size` square."""
    geometry = layout(*decoded.full_size, preprocessing)
    left, top, right, bottom = (value / decoded.reduction for value in geometry.box)
    box = (left, top, right, bottom)
    resized = decoded.image.resize(geometry.size, Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    side = preprocessing.input_size
    if geometry.size == (side, side):
        return np.array(resized, dtype=np.uint8)
    canvas = Image.new("RGB", (side, side), tuple(preprocessing.pad_color))
    canvas.paste(resized, geometry.offset)
    return np.array(canvas, dtype=np.uint8)


def load_pixels(data: bytes, limits: ImageLimits, preprocessing: Preprocessing) -> np.ndarray:
    """Encoded image file to the model's HWC uint8 input: the one entry point every CPU caller uses."""
    return preprocess(decode_image(data, limits, preprocessing), preprocessing)
