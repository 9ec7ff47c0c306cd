"""Re-ranking search candidates: diversity (maximal marginal relevance), grouping, and the page cut from them."""

import numpy as np
import pytest

from predictor.errors import InvalidRequest
from predictor.index.collection import Hit
from predictor.index.reranking import MAX_CANDIDATES, candidates, diversify, group
from predictor.index.search_options import SearchOptions, SearchSettings
from predictor.protocol.search import page_of, search_options
from tests.unit.conftest import serve_settings


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


QUERY = unit(1, 0, 0)
# Two near copies of one picture, then two different pictures a little further from the query.
VECTORS = np.stack([unit(1, 0.10, 0), unit(1, 0.11, 0), unit(1, 0, 0.6), unit(1, -0.5, -0.5)])
SCORES = VECTORS @ QUERY


def hits() -> list[Hit]:
    return [
        Hit(str(i), float(score), f"/p/{i}.jpg", {"shop": shop}, vector=vector)
        for i, (score, vector, shop) in enumerate(zip(SCORES, VECTORS, ["a", "a", "b", None], strict=True))
    ]


def test_diversity_keeps_the_best_match_first_and_moves_its_copy_back():
    assert diversify(SCORES, VECTORS, 0.0, 4) == [0, 1, 2, 3]
    diverse = diversify(SCORES, VECTORS, 0.5, 4)
    assert diverse[0] == 0 and diverse.index(1) == 3


def test_a_page_with_diversity_keeps_plain_scores_and_offset_continues_the_same_order():
    options = SearchOptions(top_k=2, diversity=0.5)
    first = page_of(hits(), options)
    assert [hit.id for hit in first] == ["0", "3"]
    assert [hit.score for hit in first] == pytest.approx([SCORES[0], SCORES[3]])
    assert all(hit.vector is None for hit in first)
    second = page_of(hits(), SearchOptions(top_k=2, offset=2, diversity=0.5))
    assert [hit.id for hit in second] == ["2", "1"]


def test_min_score_and_the_query_s_own_row_are_left_out_before_diversifying():
    options = SearchOptions(top_k=4, diversity=0.5, min_score=float(SCORES[2]) - 1e-6)
    assert [hit.id for hit in page_of(hits(), options, leave_out="0")] == ["1", "2"]


def test_grouping_keeps_group_size_hits_per_value_and_a_hit_without_the_field_is_a_group_of_its_own():
    metadatas = [{"shop": "a"}, {"shop": "a"}, {"shop": 1}, {"shop": "1"}, {}, {"shop": None}, {"shop": "a"}]
    assert group(metadatas, "shop", 1) == [0, 2, 3, 4, 5]
    assert group(metadatas, "shop", 2) == [0, 1, 2, 3, 4, 5]
    assert [hit.id for hit in page_of(hits(), SearchOptions(top_k=3, group_by="shop"))] == ["0", "2", "3"]


def test_candidates_are_ten_per_hit_and_bounded():
    assert candidates(10) == 100 and candidates(10, group_size=3) == 300
    assert candidates(10_000) == MAX_CANDIDATES
    assert SearchOptions(top_k=10, diversity=0.3).window == 100
    assert SearchOptions(top_k=10).window == 11


def options(**parameters):
    return search_options(parameters, None, serve_settings(), SearchSettings())


def test_the_request_parameters_are_checked_and_named_in_the_message():
    parsed = options(diversity="0.25", group_by="shop", group_size=3)
    assert (parsed.diversity, parsed.group_by, parsed.group_size) == (0.25, "shop", 3)
    for parameters, message in [
        ({"diversity": 1.5}, "parameter 'diversity' must be a number from 0.0 to 1.0"),
        ({"diversity": "much"}, "parameter 'diversity' must be a number"),
        ({"group_by": "shop", "group_size": 11}, "parameter 'group_size' must be an integer from 1 to 10"),
        ({"group_size": 2}, "parameter 'group_size' needs parameter 'group_by'"),
        ({"group_by": 5}, "parameter 'group_by' must be a string"),
        ({"diversity": 0.5, "top_k": 100, "offset": 150}, r"parameter 'diversity' re-ranks at most offset \+ top_k"),
        ({"group_by": "shop", "top_k": 100, "offset": 150}, r"parameter 'group_by' re-ranks at most offset \+ top_k"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            options(**parameters)
