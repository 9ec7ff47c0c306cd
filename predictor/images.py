"""Turning untrusted encoded image files into the model's input: limits, decode, orientation, RGB, resize, crop.

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

# Signatures of the formats we accept, used to tell raw image bytes from base64 text.
_MAGIC_PREFIXES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
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


@dataclass(frozen=True)
class Preprocessing:
    """Geometry of the model input; mean/std live with the model because they are applied on its device."""

    resize_shorter_side: int = 256
    crop_size: int = 224

    def __post_init__(self) -> None:
        if self.crop_size <= 0 or self.resize_shorter_side < self.crop_size:
            raise ValueError(
                f"resize_shorter_side ({self.resize_shorter_side}) must be >= crop_size ({self.crop_size}) > 0"
            )


def looks_like_image(data: bytes) -> bool:
    return data.startswith(_MAGIC_PREFIXES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _is_base64_text(data: bytes) -> bool:
    return not data.translate(None, _BASE64_ALPHABET)


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


def _to_rgb(image: Image.Image) -> Image.Image:
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
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def decode_image(data: bytes, limits: ImageLimits, draft_size: int | None = None) -> Image.Image:
    """Decode one untrusted image file to an upright RGB picture, refusing anything over the limits.

    `draft_size` lets JPEG decode at a reduced DCT scale whose both sides are still >= draft_size: much faster for
    big photos, and lossless for us because we downscale to that size anyway.
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
            if image.format in ("JPEG", "MPO") and draft_size:
                image.draft("RGB", (draft_size, draft_size))
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return _to_rgb(image)
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImage(f"image has too many pixels, over the limit of {limits.max_pixels}: {error}") from None
    except UnidentifiedImageError as error:
        raise InvalidImage(f"not a supported image ({', '.join(sorted(ACCEPTED_FORMATS))}): {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise InvalidImage(f"corrupt or truncated image: {error}") from None


def crop_box(width: int, height: int, preprocessing: Preprocessing) -> tuple[float, float, float, float]:
    """The centred crop of the resized image, as (left, top, right, bottom) in the original image's pixels.

    Mapping the crop back lets the resampler touch only the pixels we keep; every decoder path uses this geometry.
    """
    scale = preprocessing.resize_shorter_side / min(width, height)
    new_width, new_height = max(round(width * scale), 1), max(round(height * scale), 1)
    crop = preprocessing.crop_size
    left, top = (new_width - crop) // 2, (new_height - crop) // 2
    return (left / scale, top / scale, (left + crop) / scale, (top + crop) / scale)


def resize_and_crop(image: Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """Shorter side to `resize_shorter_side`, then a centred square crop; returns HWC uint8 RGB."""
    crop = preprocessing.crop_size
    box = crop_box(image.width, image.height, preprocessing)
    resized = image.resize((crop, crop), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    return np.array(resized, dtype=np.uint8)


def load_pixels(data: bytes, limits: ImageLimits, preprocessing: Preprocessing) -> np.ndarray:
    """Encoded image file to the model's HWC uint8 input."""
    image = decode_image(data, limits, draft_size=preprocessing.resize_shorter_side)
    return resize_and_crop(image, preprocessing)
