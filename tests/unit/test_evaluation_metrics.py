from pathlib import Path

import numpy as np
import pytest

from predictor.evaluation.retrieval import EvalSet, gate_failures, retrieval_scores, score_embeddings


def test_precision_and_map_by_hand():
    labels = np.array(["a", "a", "a", "b", "b", "b"])
    # query 0 (a): a b a ...; query 3 (b): b b a ...; the rest all right.
    neighbour_labels = np.array(
        [
            ["a", "b", "a", "b", "b"],
            ["a", "a", "b", "b", "b"],
            ["a", "a", "b", "b", "b"],
            ["b", "b", "a", "a", "a"],
            ["a", "b", "b", "a", "a"],
            ["b", "b", "a", "a", "a"],
        ]
    )
    p1, p5, map10, by_category = retrieval_scores(labels, neighbour_labels)
    assert p1 == pytest.approx(5 / 6)
    # k is capped at 2, the other images of each category
    assert p5 == pytest.approx((0.5 + 1 + 1 + 1 + 0.5 + 1) / 6)
    # AP of query 0: (1/1 + 2/3) / 2; query 4: (1/2 + 2/3) / 2
    assert map10 == pytest.approx(((1 + 2 / 3) / 2 + 1 + 1 + 1 + (1 / 2 + 2 / 3) / 2 + 1) / 6)
    assert by_category == pytest.approx({"a": 2.5 / 3, "b": 2.5 / 3})


def test_scores_leave_the_query_out_and_count_near_duplicates_found_first():
    vectors = np.eye(4, dtype=np.float32)
    labelled = np.concatenate([vectors[:2], vectors[:2] * 0.9 + vectors[2:] * 0.1])
    labelled /= np.linalg.norm(labelled, axis=1, keepdims=True)
    eval_set = EvalSet(
        labelled=[("x", Path("0")), ("y", Path("1")), ("x", Path("2")), ("y", Path("3"))],
        originals=[Path("o")],
        copies=[(0, Path("c0")), (0, Path("c1"))],
    )
    original = vectors[3:4]
    copies = np.stack([vectors[3], vectors[0]])  # both copy the original; the second looks like a labelled image
    scores = score_embeddings(eval_set, labelled, original, copies)
    assert scores.precision_at_1 == 1.0 and scores.map_at_10 == 1.0 and scores.near_duplicate_recall_at_1 == 0.5
    assert gate_failures(scores, 0.9, 0.9) == ["near-duplicate recall@1 0.500 < 0.9"]
