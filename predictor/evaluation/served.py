"""The evaluation measures, taken through a running server's V2 API instead of in process.

The server's collection must hold the labelled images (and the near-duplicate originals); ids are content SHA-256,
so each hit maps back to its file. Hits outside the labelled set are skipped for the category measures, so the
figures compare one to one with the in-process ones.
"""

from pathlib import Path

import numpy as np

from predictor.client.query import search
from predictor.evaluation.retrieval import MAP_DEPTH, EvalSet, Scores, measured_scores
from predictor.imaging.image_files import content_id

# Enough hits that MAP_DEPTH remain after dropping the query itself and any near-duplicate originals.
SERVED_TOP_K = 100
BATCH = 8


def _hits(url: str, paths: list[Path], top_k: int) -> list[list[str]]:
    found: list[list[str]] = []
    for start in range(0, len(paths), BATCH):
        batch = [str(path) for path in paths[start : start + BATCH]]
        found += [[hit.id for hit in hits] for hits in search(url, "http", batch, top_k)]
    return found


def evaluate_served(url: str, eval_set: EvalSet) -> Scores:
    labelled_paths = [path for _, path in eval_set.labelled]
    ids = [content_id(path.read_bytes()) for path in labelled_paths]
    label_of = dict(zip(ids, eval_set.labels.tolist(), strict=True))
    rows = []
    for own, hits in zip(ids, _hits(url, labelled_paths, SERVED_TOP_K), strict=True):
        ranked = [label_of[hit] for hit in hits if hit != own and hit in label_of][:MAP_DEPTH]
        rows.append(ranked + [""] * (MAP_DEPTH - len(ranked)))
    recall = None
    if eval_set.copies:
        gallery_ids = [content_id(path.read_bytes()) for path in eval_set.gallery()]
        best = _hits(url, [path for _, path in eval_set.copies], 1)
        recall = float(
            np.mean([bool(h) and h[0] == gallery_ids[t] for (t, _), h in zip(eval_set.copies, best, strict=True)])
        )
    return measured_scores(eval_set, np.array(rows), recall)
