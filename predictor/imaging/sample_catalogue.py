"""The bundled sample catalogue: real photographs (from scikit-image's set), shipped as JPEG package data.

`python -m tools.sample_photos` wrote the files once, so that neither the server nor `image-search sample-catalogue`
needs scikit-image (or scipy) at run time.
"""

import shutil
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
from PIL import Image

# Photographs (not synthetic test patterns), each shipped as <name>.jpg.
PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
    "cell",
    "microaneurysms",
)
# Two views of one scene, the probe's pair of near-duplicates.
STEREO_PAIR = ("motorcycle_left", "motorcycle_right")


def _shipped(name: str) -> Traversable:
    return resources.files("predictor.imaging").joinpath("sample_photos", f"{name}.jpg")


def photo(name: str) -> np.ndarray:
    """[H, W, 3] uint8: one shipped photograph."""
    with _shipped(name).open("rb") as file, Image.open(file) as image:
        return np.asarray(image.convert("RGB"))


def stereo_pair() -> tuple[np.ndarray, np.ndarray]:
    left, right = STEREO_PAIR
    return photo(left), photo(right)


def write_catalogue(out_dir: Path) -> list[Path]:
    """Copy every sample photo once; existing files are left as they are so ids stay stable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in (*PHOTOS, *STEREO_PAIR):
        path = out_dir / f"{name}.jpg"
        if not path.exists():
            with _shipped(name).open("rb") as source, path.open("wb") as target:
                shutil.copyfileobj(source, target)
        written.append(path)
    return written


# Real photographs grouped by what they show, for the evaluation gate (`image-search eval --labelled DIR`). Most
# categories are the four quadrants of one large photo of a material or scene: four different real images of the
# same kind of thing, which a good embedding keeps together.
QUADRANT_CATEGORIES = {
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
    "deep-space": "hubble_deep_field",
    "moon": "moon",
    "stained-tissue": "immunohistochemistry",
    "cells": "cell",
    "retina": "retina",
}


def quadrants(pixels: np.ndarray) -> list[np.ndarray]:
    height, width = pixels.shape[0] // 2, pixels.shape[1] // 2
    return [pixels[y : y + height, x : x + width] for y in (0, height) for x in (0, width)]


def write_labelled_sample(out_dir: Path, quality: int = 92) -> Path:
    """One sub-folder per category, each holding real photos of it."""
    images: dict[str, list[np.ndarray]] = {
        category: quadrants(photo(name)) for category, name in QUADRANT_CATEGORIES.items()
    }
    images["motorcycle"] = list(stereo_pair())
    for category, pictures in images.items():
        folder = out_dir / category
        folder.mkdir(parents=True, exist_ok=True)
        for number, pixels in enumerate(pictures):
            path = folder / f"{category}-{number}.jpg"
            if not path.exists():
                Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB").save(path, format="JPEG", quality=quality)
    return out_dir
