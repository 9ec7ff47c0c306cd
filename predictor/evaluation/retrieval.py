"""Retrieval quality of a model: is it good enough to serve, and which option is better?

Measures, on a labelled folder (one sub-folder per category) and a near-duplicate folder (`originals/` and
`copies/<original stem>--<n>.<ext>`):
- precision@1 and precision@5, leave-one-out: each image queries all the others, and counts how many of its k
  nearest share its category (k is capped at the category's size minus one, so a small category can score 1.0);
- mAP@10: average precision over the 10 nearest, normalised by min(10, images of the category minus one);
- near-duplicate recall@1: each edited copy queries the originals together with the labelled images; how often its
  own original comes first.
Every measure is a mean over queries. Search here is exact (numpy), so the figures measure the model, not the index;
`evaluation_served.py` measures the same through a running server.
"""

import json
import random
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import numpy as np

from predictor.embedding.file_embedding import Embedder
from predictor.evaluation.near_duplicates import near_duplicate
from predictor.imaging.image_files import IMAGE_SUFFIXES

COPY_SEPARATOR = "--"
MAP_DEPTH = 10


@dataclass(frozen=True)
class EvalSet:
    labelled: list[tuple[str, Path]]  # (category, file)
    originals: list[Path] = field(default_factory=list)
    copies: list[tuple[int, Path]] = field(default_factory=list)  # (index of its original in gallery(), file)

    @property
    def labels(self) -> np.ndarray:
        return np.array([category for category, _ in self.labelled])

    def gallery(self) -> list[Path]:
        """What a near-duplicate copy is searched against: the originals first, then the labelled images."""
        return self.originals + [path for _, path in self.labelled]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def labelled_images(directory: Path) -> list[tuple[str, Path]]:
    pairs = [
        (category.name, path)
        for category in sorted(p for p in directory.iterdir() if p.is_dir())
        for path in _images(category)
    ]
    categories = {name for name, _ in pairs}
    if len(categories) < 2 or len(pairs) < 3:
        raise ValueError(f"{directory} needs at least two category folders holding images; found {len(categories)}")
    return pairs


def near_duplicate_pairs(directory: Path) -> tuple[list[Path], list[tuple[int, Path]]]:
    originals = _images(directory / "originals")
    by_stem = {path.stem: position for position, path in enumerate(originals)}
    copies = []
    for path in _images(directory / "copies"):
        stem = path.stem.rsplit(COPY_SEPARATOR, 1)[0]
        if stem not in by_stem:
            raise ValueError(f"{path}: no original named {stem}.* in {directory / 'originals'}")
        copies.append((by_stem[stem], path))
    if not originals or not copies:
        raise ValueError(f"{directory} needs originals/ and copies/<original stem>--<n>.jpg holding images")
    return originals, copies


def load_eval_set(labelled: Path, near_duplicates: Path | None = None, copies_dir: Path | None = None) -> EvalSet:
    """The labelled images and, from `near_duplicates`, originals and copies. Without it but with `copies_dir`,
    the labelled images are the originals: one edited copy of each is written there."""
    pairs = labelled_images(labelled)
    if near_duplicates is not None:
        originals, copies = near_duplicate_pairs(near_duplicates)
        return EvalSet(pairs, originals, copies)
    if copies_dir is None:
        return EvalSet(pairs)
    rng = random.Random(0)
    copies_dir.mkdir(parents=True, exist_ok=True)
    copies = []
    for position, (_, path) in enumerate(pairs):
        copy = copies_dir / f"{position:05d}.jpg"
        copy.write_bytes(near_duplicate(path.read_bytes(), rng))
        copies.append((position, copy))
    return EvalSet(pairs, [], copies)


@dataclass(frozen=True)
class Scores:
    images: int
    categories: int
    precision_at_1: float
    precision_at_5: float
    map_at_10: float
    near_duplicate_recall_at_1: float | None
    near_duplicate_queries: int
    precision_at_5_by_category: dict[str, float]

    def row(self) -> dict[str, float | None]:
        return {
            "p@1": self.precision_at_1,
            "p@5": self.precision_at_5,
            "mAP@10": self.map_at_10,
            "nd-recall@1": self.near_duplicate_recall_at_1,
        }


def ranked_neighbours(similarity: np.ndarray, depth: int) -> np.ndarray:
    """Per row, the `depth` best columns, best first; ties go to the lower column so results are reproducible."""
    depth = min(depth, similarity.shape[1])
    return np.argsort(-similarity, axis=1, kind="stable")[:, :depth]


def retrieval_scores(labels: np.ndarray, neighbour_labels: np.ndarray) -> tuple[float, float, float, dict[str, float]]:
    """p@1, p@5, mAP@10 and p@5 per category from the labels of each query's ranked neighbours (itself left out)."""
    p1, p5, ap10 = [], [], []
    by_category: dict[str, list[float]] = {}
    for row, label in enumerate(labels):
        relevant = int((labels == label).sum()) - 1
        if relevant == 0:
            continue
        hits = neighbour_labels[row] == label
        p1.append(float(hits[0]))
        precision = float(hits[: min(5, relevant)].mean())
        p5.append(precision)
        by_category.setdefault(str(label), []).append(precision)
        top = hits[:MAP_DEPTH]
        ranks = np.arange(1, len(top) + 1)
        ap10.append(float((np.cumsum(top) / ranks * top).sum() / min(MAP_DEPTH, relevant)))
    per_category = {name: float(np.mean(values)) for name, values in sorted(by_category.items())}
    return float(np.mean(p1)), float(np.mean(p5)), float(np.mean(ap10)), per_category


def score_embeddings(
    eval_set: EvalSet,
    labelled: np.ndarray,
    originals: np.ndarray | None = None,
    copies: np.ndarray | None = None,
) -> Scores:
    """Scores from unit vectors of the labelled images, the near-duplicate originals and their copies."""
    similarity = labelled @ labelled.T
    np.fill_diagonal(similarity, -np.inf)
    labels = eval_set.labels
    # The query itself sorts last (-inf); never let it into its own ranking.
    neighbours = ranked_neighbours(similarity, min(MAP_DEPTH, len(labels) - 1))
    recall = None
    if eval_set.copies and copies is not None:
        gallery = labelled if originals is None else np.concatenate([originals, labelled])
        best = ranked_neighbours(copies @ gallery.T, 1)[:, 0]
        targets = np.array([target for target, _ in eval_set.copies])
        recall = float((best == targets).mean())
    return measured_scores(eval_set, labels[neighbours], recall)


def measured_scores(eval_set: EvalSet, neighbour_labels: np.ndarray, recall: float | None) -> Scores:
    """The set's scores from the labels of each labelled query's ranked neighbours and the near-duplicate recall."""
    p1, p5, map10, per_category = retrieval_scores(eval_set.labels, neighbour_labels)
    return Scores(
        images=len(eval_set.labelled),
        categories=len(set(eval_set.labels.tolist())),
        precision_at_1=p1,
        precision_at_5=p5,
        map_at_10=map10,
        near_duplicate_recall_at_1=recall,
        near_duplicate_queries=len(eval_set.copies),
        precision_at_5_by_category=per_category,
    )


def evaluate(embed: Embedder, eval_set: EvalSet) -> Scores:
    labelled = embed([path for _, path in eval_set.labelled])
    if not eval_set.copies:
        return score_embeddings(eval_set, labelled)
    return score_embeddings(eval_set, labelled, embed(eval_set.originals), embed([p for _, p in eval_set.copies]))


@dataclass(frozen=True)
class EvalReport:
    model: str
    spec: dict
    scores: Scores

    def table(self) -> str:
        s = self.scores
        lines = [f"model {self.model}: {s.images} images in {s.categories} categories", ""]
        lines.append(f"  {'category':<24} precision@5")
        lines += [f"  {name:<24} {value:.3f}" for name, value in s.precision_at_5_by_category.items()]
        lines += ["", f"  {'precision@1':<24} {s.precision_at_1:.3f}", f"  {'precision@5':<24} {s.precision_at_5:.3f}"]
        lines.append(f"  {'mAP@10':<24} {s.map_at_10:.3f}")
        if s.near_duplicate_recall_at_1 is not None:
            recall = f"{s.near_duplicate_recall_at_1:.3f} ({s.near_duplicate_queries} copies)"
            lines.append(f"  {'near-duplicate recall@1':<24} {recall}")
        return "\n".join(lines)


def write_json(payload: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(payload) if is_dataclass(payload) and not isinstance(payload, type) else payload
    path.write_text(json.dumps(data, indent=2) + "\n")


def gate_failures(scores: Scores, min_precision: float, min_recall: float) -> list[str]:
    failures = []
    if scores.precision_at_5 < min_precision:
        failures.append(f"precision@5 {scores.precision_at_5:.3f} < {min_precision}")
    recall = scores.near_duplicate_recall_at_1
    if min_recall > 0 and (recall is None or recall < min_recall):
        shown = "not measured (no --near-duplicates)" if recall is None else f"{recall:.3f}"
        failures.append(f"near-duplicate recall@1 {shown} < {min_recall}")
    return failures
