"""Edited copies of an image, made the way people copy pictures, for the near-duplicate measure."""

import io
import random

from PIL import Image, ImageEnhance, ImageOps

from predictor.imaging.decoding import to_rgb


def near_duplicate(data: bytes, rng: random.Random) -> bytes:
    """A copy as people make them: cropped 2-8% per side, resized, colours a little off, turned a few degrees or
    mirrored, and re-encoded as a JPEG of quality 50-90. A transparent picture is copied as it is shown and embedded:
    on the decoder's background, not on whatever colour its transparent pixels hide."""
    image = to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    width, height = image.size
    left, top, right, bottom = (rng.uniform(0.02, 0.08) for _ in range(4))
    image = image.crop(
        (round(width * left), round(height * top), round(width * (1 - right)), round(height * (1 - bottom)))
    )
    if rng.random() < 0.5:
        image = image.rotate(rng.uniform(-5, 5), resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))
    else:
        image = ImageOps.mirror(image)
    scale = rng.uniform(0.5, 0.9)
    image = image.resize((max(round(image.width * scale), 32), max(round(image.height * scale), 32)))
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.9, 1.1))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=rng.randint(50, 90))
    return out.getvalue()
