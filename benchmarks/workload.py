"""The JPEG files every part of the benchmark sends: the sample photos as they are, and the same photos at phone size.

Phone cameras write 12-megapixel JPEGs with a 4032-pixel long side; upscaled copies of the sample photos have that
geometry and file size, so decoding costs what it would for real uploads, though their content stays the original's.
"""

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from predictor.imaging.sample_catalogue import write_catalogue

PHONE_LONG_SIDE = 4032
PHONE_QUALITY = 90


@dataclass(frozen=True)
class Workload:
    names: list[str]
    images: list[bytes]
    catalogue_dir: Path

    def describe(self) -> dict:
        sizes = [len(image) for image in self.images]
        return {
            "images": len(self.images),
            "mean_bytes": round(sum(sizes) / len(sizes)),
            "min_bytes": min(sizes),
            "max_bytes": max(sizes),
            "source": f"the sample catalogue's photos as they are, plus each upscaled to a {PHONE_LONG_SIDE}-pixel "
            f"long side (JPEG quality {PHONE_QUALITY})",
        }


def phone_sized(photo: Path) -> bytes:
    image = Image.open(photo).convert("RGB")
    scale = PHONE_LONG_SIDE / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    out = io.BytesIO()
    image.resize(size, Image.Resampling.BICUBIC).save(out, format="JPEG", quality=PHONE_QUALITY)
    return out.getvalue()


def build_workload(workdir: Path) -> Workload:
    """The catalogue (which the index is built from) and the request images.

    Originals and phone-sized copies alternate, so any window of consecutive requests carries the same mix.
    """
    catalogue_dir = workdir / "catalogue"
    names: list[str] = []
    images: list[bytes] = []
    for photo in sorted(write_catalogue(catalogue_dir)):
        names += [photo.stem, f"{photo.stem}@phone"]
        images += [photo.read_bytes(), phone_sized(photo)]
    return Workload(names, images, catalogue_dir)
