"""Write the sample photographs that the package ships (predictor/imaging/sample_photos/) from scikit-image.

Run once when the set changes: `python -m tools.sample_photos`. The package then needs neither scikit-image nor scipy
(113 MB) at run time; this tool does (the `test` extra installs it). The JPEGs keep each photo's full resolution at
quality 92, the settings the catalogue was always written with, so a re-run writes the same bytes.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from predictor.imaging.sample_catalogue import PHOTOS, STEREO_PAIR

OUT = Path(__file__).resolve().parents[1] / "predictor" / "imaging" / "sample_photos"
QUALITY = 92


def photographs() -> dict[str, np.ndarray]:
    pictures = {name: getattr(data, name)() for name in PHOTOS}
    left, right, _ = data.stereo_motorcycle()
    pictures.update(zip(STEREO_PAIR, (left, right), strict=True))
    return pictures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="Directory to write the JPEGs to.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, pixels in photographs().items():
        path = args.out / f"{name}.jpg"
        Image.fromarray(pixels).convert("RGB").save(path, format="JPEG", quality=QUALITY)
        total += path.stat().st_size
    print(f"wrote {len(PHOTOS) + len(STEREO_PAIR)} photos ({total / 1e6:.2f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
