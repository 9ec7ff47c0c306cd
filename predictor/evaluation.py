"""The evaluation gate: is a model good enough to promote?

Two measures on a labelled folder (one sub-folder per category):
- precision@k by category, leave-one-out: each image queries all the others; how many of its k nearest share its
  category (k is capped at the category's size minus one, so small categories can still score 1.0);
- near-duplicate recall@1: each image is re-encoded, resized, cropped and colour-jittered, then queried against the
  originals; how often its own original comes first.
Search here is exact (numpy), so the figures measure the model, not the index.
"""

import io
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from predictor.backbone import Backbone
from predictor.images import ImageLimits, load_pixels
from predictor.indexing import IMAGE_SUFFIXES


@dataclass(frozen=True)
class EvalReport:
    model: str
    k: int
    precision_at_k: dict[str, float]
    mean_precision_at_k: float
    near_duplicate_recall_at_1: float
    images: int

    def table(self) -> str:
        lines = [f"model {self.model}: {self.images} images, {len(self.precision_at_k)} categories", ""]
        lines.append(f"  {'category':<24} precision@{self.k}")
        lines += [f"  {name:<24} {value:.3f}" for name, value in sorted(self.precision_at_k.items())]
        lines += [
            f"  {'mean':<24} {self.mean_precision_at_k:.3f}",
            "",
            f"  near-duplicate recall@1  {self.near_duplicate_recall_at_1:.3f}",
        ]
        return "\n".join(lines)


def labelled_images(directory: Path) -> list[tuple[str, Path]]:
    pairs = [
        (category.name, path)
        for category in sorted(p for p in directory.iterdir() if p.is_dir())
        for path in sorted(category.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    categories = {name for name, _ in pairs}
    if len(categories) < 2 or len(pairs) < 3:
        raise ValueError(f"{directory} needs at least two category folders holding images; found {len(categories)}")
    return pairs


def near_duplicate(data: bytes, rng: random.Random) -> bytes:
    """A copy as users make them: re-encoded, resized, slightly cropped, colours a little off."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    crop = rng.uniform(0.0, 0.03)
    image = image.crop((int(width * crop), int(height * crop), int(width * (1 - crop)), int(height * (1 - crop))))
    scale = rng.uniform(0.6, 0.9)
    image = image.resize((max(int(image.width * scale), 32), max(int(image.height * scale), 32)))
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.9, 1.1))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=rng.randint(70, 90))
    return out.getvalue()


def _embed(backbone: Backbone, files: list[bytes], batch_size: int = 32) -> np.ndarray:
    limits, preprocessing = ImageLimits(), backbone.spec.preprocessing
    chunks = []
    for start in range(0, len(files), batch_size):
        pixels = np.stack([load_pixels(data, limits, preprocessing) for data in files[start : start + batch_size]])
        chunks.append(backbone.run(pixels).embeddings)
    return np.concatenate(chunks)


def evaluate(backbone: Backbone, directory: Path, k: int = 5, seed: int = 0) -> EvalReport:
    pairs = labelled_images(directory)
    labels = np.array([name for name, _ in pairs])
    originals = [path.read_bytes() for _, path in pairs]
    embeddings = _embed(backbone, originals)

    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    precision: dict[str, list[float]] = {}
    for row, label in enumerate(labels):
        same = int((labels == label).sum()) - 1
        if same == 0:
            continue
        k_here = min(k, same)
        nearest = np.argsort(-similarity[row])[:k_here]
        precision.setdefault(str(label), []).append(float((labels[nearest] == label).mean()))

    rng = random.Random(seed)
    copies = _embed(backbone, [near_duplicate(data, rng) for data in originals])
    recall = float((np.argmax(copies @ embeddings.T, axis=1) == np.arange(len(originals))).mean())

    by_category = {name: float(np.mean(values)) for name, values in precision.items()}
    return EvalReport(
        model=str(backbone.spec.identity),
        k=k,
        precision_at_k=by_category,
        mean_precision_at_k=float(np.mean(list(by_category.values()))),
        near_duplicate_recall_at_1=recall,
        images=len(pairs),
    )


def write_report(report: EvalReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")


def gate_failures(report: EvalReport, min_precision: float, min_recall: float) -> list[str]:
    failures = []
    if report.mean_precision_at_k < min_precision:
        failures.append(f"mean precision@{report.k} {report.mean_precision_at_k:.3f} < {min_precision}")
    if report.near_duplicate_recall_at_1 < min_recall:
        failures.append(f"near-duplicate recall@1 {report.near_duplicate_recall_at_1:.3f} < {min_recall}")
    return failures
