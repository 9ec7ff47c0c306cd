"""The bundled sample catalogue: real photographs shipped with scikit-image, written out as JPEG files."""

from pathlib import Path

import numpy as np
from PIL import Image

# Photographs (not synthetic test patterns) that scikit-image ships inside its wheel.
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


def photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def stereo_pair() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    return left, right


def write_catalogue(out_dir: Path, quality: int = 92) -> list[Path]:
    """Write every sample photo once; existing files are left as they are so ids stay stable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {name: photo(name) for name in PHOTOS}
    images["motorcycle_left"], images["motorcycle_right"] = stereo_pair()
    written = []
    for name, pixels in images.items():
        path = out_dir / f"{name}.jpg"
        if not path.exists():
            Image.fromarray(pixels).convert("RGB").save(path, format="JPEG", quality=quality)
        written.append(path)
    return written
