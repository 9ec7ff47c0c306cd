"""The search effort planned from how many rows a search's namespace and filter keep (docs/search-index.md)."""

from predictor.index.search_effort import MIN_CANDIDATES, RowCounts, planned_effort
from predictor.index.vector_index import VectorIndex


def test_an_unfiltered_search_of_a_large_collection_keeps_the_measured_nprobe():
    assert planned_effort(VectorIndex(), 200_000, 200_000, hits=10) == 32


def test_nprobe_grows_as_the_filter_narrows_and_a_small_filtered_set_is_searched_whole():
    index = VectorIndex()
    assert planned_effort(index, 200_000, 100_000, hits=10) == 64
    assert planned_effort(index, 200_000, 20_000, hits=10) == 320
    # Below max(rows / 32, MIN_CANDIDATES) matching rows every list is scanned: exact search over them.
    assert planned_effort(index, 200_000, 6_250, hits=10) == 1024
    assert planned_effort(index, 200_000, 200, hits=10) == 1024


def test_a_small_collection_is_searched_whole_whatever_its_filter():
    index = VectorIndex()
    for rows in (100, 2_000, MIN_CANDIDATES):
        assert planned_effort(index, rows, rows, hits=10) == 1024


def test_nothing_to_find_costs_only_the_default_effort():
    assert planned_effort(VectorIndex(), 200_000, 0, hits=10) == 32


def test_hnsw_ef_grows_within_its_bound_and_flat_has_nothing_to_plan():
    hnsw = VectorIndex("HNSW")
    assert planned_effort(hnsw, 100_000, 100_000, hits=10) == 64
    assert planned_effort(hnsw, 100_000, 10_000, hits=10) == 640
    assert planned_effort(hnsw, 100_000, 100, hits=10) == 2048
    assert planned_effort(hnsw, 100_000, 100_000, hits=100) == 100
    assert planned_effort(VectorIndex("FLAT"), 100_000, 10, hits=10) is None


def test_counts_are_kept_for_their_time_and_forgotten_after_a_write():
    asked = []

    def count(expression: str) -> int:
        asked.append(expression)
        return len(asked)

    counts = RowCounts(ttl_s=3600)
    assert counts.get('metadata["shop"] == 1', count) == 1
    assert counts.get('metadata["shop"] == 1', count) == 1
    assert counts.get("", count) == 2
    counts.forget()
    assert counts.get('metadata["shop"] == 1', count) == 3
    assert RowCounts(ttl_s=0).get("", count) == 4


def test_counts_kept_are_bounded():
    counts = RowCounts(ttl_s=3600, limit=2)
    for number in range(3):
        counts.get(str(number), lambda expression: int(expression))
    assert counts.get("0", lambda expression: 99) == 99
