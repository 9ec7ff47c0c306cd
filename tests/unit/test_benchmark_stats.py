"""The benchmark's arithmetic: percentiles of a row, and each row against the in-process limit and the naive server."""

import pytest

from benchmarks.stats import Row, add_ratios, find, limit_rows


def serving_rows() -> list[Row]:
    return [
        Row("limit", "in-process, batch 16", 100.0),
        Row("limit", "in-process, one image", 20.0, latencies_ms=[40.0, 50.0, 60.0], concurrency=1),
        Row("server", "server gRPC c=32", 90.0, latencies_ms=[300.0], concurrency=32),
        Row("server", "server gRPC c=1", 18.0, latencies_ms=[55.0], concurrency=1),
        Row("naive", "naive FastAPI c=32", 30.0, latencies_ms=[900.0], concurrency=32),
        Row("search", "HNSW 5000", 800.0, unit="queries"),
    ]


def test_percentiles_come_from_the_latencies_and_are_absent_without_any():
    row = Row("server", "r", 1.0, latencies_ms=[float(ms) for ms in range(1, 101)])
    assert row.p50 == pytest.approx(50.5)
    assert row.p95 == pytest.approx(95.05)
    assert row.p99 == pytest.approx(99.01)
    assert Row("server", "r", 1.0).p99 is None


def test_the_json_of_a_row_counts_its_requests_instead_of_listing_them():
    record = Row("server", "r", 2.0, latencies_ms=[10.0, 30.0], concurrency=8).to_json()
    assert "latencies_ms" not in record
    assert record["requests"] == 2 and record["p50_ms"] == 20.0 and record["concurrency"] == 8


def test_find_matches_group_concurrency_and_name_prefix():
    rows = serving_rows()
    assert find(rows, "server", 32, "server gRPC").name == "server gRPC c=32"
    assert find(rows, "server", 1).name == "server gRPC c=1"
    assert find(rows, "server", 64) is None
    assert find(rows, "server", 32, "server REST") is None


def test_limit_rows_are_the_throughput_and_the_single_image_row():
    limit, single = limit_rows(serving_rows())
    assert (limit.name, single.name) == ("in-process, batch 16", "in-process, one image")
    assert limit_rows([row for row in serving_rows() if row.group != "limit"]) is None


def test_ratios_are_against_the_limit_and_the_naive_server_at_the_same_concurrency():
    rows = serving_rows()
    add_ratios(rows)
    by_name = {row.name: row for row in rows}
    assert by_name["server gRPC c=32"].ratio_to_limit == pytest.approx(0.9)
    assert by_name["server gRPC c=32"].ratio_to_baseline == pytest.approx(3.0)
    # No naive row at c=1: no baseline ratio rather than one against another concurrency.
    assert by_name["server gRPC c=1"].ratio_to_baseline is None
    assert by_name["HNSW 5000"].ratio_to_limit is None, "search rows count queries, not images"


def test_without_the_serving_part_no_ratio_is_made_up():
    rows = [Row("search", "HNSW 5000", 800.0, unit="queries"), Row("precision", "in-process fp32, batch 8", 50.0)]
    add_ratios(rows)
    assert all(row.ratio_to_limit is None and row.ratio_to_baseline is None for row in rows)


def test_ratios_to_the_litserve_peer_are_at_the_same_concurrency_only():
    rows = serving_rows() + [Row("litserve", "LitServe peer, c=32", 75.0, latencies_ms=[400.0], concurrency=32)]
    add_ratios(rows)
    by_name = {row.name: row for row in rows}
    assert by_name["server gRPC c=32"].ratio_to_peer == pytest.approx(1.2)
    assert by_name["naive FastAPI c=32"].ratio_to_peer == pytest.approx(0.4)
    assert by_name["LitServe peer, c=32"].ratio_to_peer == pytest.approx(1.0)
    assert by_name["LitServe peer, c=32"].ratio_to_baseline == pytest.approx(2.5), "the peer is a server too"
    assert by_name["server gRPC c=1"].ratio_to_peer is None, "no peer row at c=1"
    assert by_name["in-process, batch 16"].ratio_to_peer is None, "the limit is no server"
