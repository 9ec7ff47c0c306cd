"""Which evaluation set a run scored: a content hash of its labelled images, so two runs on the same set compare."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from predictor.evaluation import labelled_images
from predictor.model_package import file_sha256


@dataclass(frozen=True)
class EvalSet:
    sha256: str
    images: int
    categories: tuple[str, ...]

    def params(self) -> dict[str, str]:
        return {
            "eval_set.sha256": self.sha256,
            "eval_set.images": str(self.images),
            "eval_set.categories": str(len(self.categories)),
        }


def fingerprint(directory: Path) -> EvalSet:
    """SHA-256 over each image's category, file name and content, in a fixed order: renaming a file, moving it to
    another category or changing a pixel changes it; the folder's location and file times do not."""
    pairs = labelled_images(directory)
    digest = hashlib.sha256()
    for _category, path in pairs:
        relative = path.relative_to(directory).as_posix()
        digest.update(f"{relative}\0{file_sha256(path)}\n".encode())
    return EvalSet(digest.hexdigest(), len(pairs), tuple(sorted({category for category, _ in pairs})))
