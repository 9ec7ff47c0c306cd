"""The benchmark's targets, its printed table and JSON record, and its one entry point's choice of parts."""

import json

import pytest

from benchmarks import report, targets
from benchmarks import run as run_command
from benchmarks.__main__ import COMMANDS, parser
from benchmarks.run import DEFAULT_PARTS, PARTS, TARGETS, chosen_parts, found_targets
from benchmarks.stats import Row, add_ratios


def serving_rows(grpc_c32: float, grpc_c1_p50: float) -> list[Row]:
    rows = [
        Row("limit", "in-process, batch 16", 100.0, notes="fp32"),
        Row("limit", "in-process, one image", 20.0, latencies_ms=[50.0], concurrency=1),
        Row("server", "server gRPC c=32", grpc_c32, latencies_ms=[300.0], concurrency=32),
        Row("server", "server gRPC c=1", 18.0, latencies_ms=[grpc_c1_p50], concurrency=1),
        Row("naive", "naive FastAPI c=32", 30.0, latencies_ms=[900.0], concurrency=32),
    ]
    add_ratios(rows)
    return rows


def verdicts(found: list[targets.Target]) -> dict[str, bool]:
    return {target.name: target.holds for target in found}


def test_serving_targets_hold_or_miss_on_the_measured_figures():
    good = verdicts(targets.serving_targets(serving_rows(grpc_c32=95.0, grpc_c1_p50=60.0)))
    assert good == {
        "gRPC c=32 vs the limit at the served precision": True,
        "gRPC c=32 vs the in-process limit": True,
        "gRPC c=32 vs the naive server": True,
        "gRPC c=1 p50 latency": True,
    }
    # 1.3 x 50 ms + 10 ms = 75 ms is the latency bound; 85% of the limit misses 90% but holds 80%.
    bad = verdicts(targets.serving_targets(serving_rows(grpc_c32=85.0, grpc_c1_p50=76.0)))
    assert bad["gRPC c=32 vs the limit at the served precision"] is False
    assert bad["gRPC c=32 vs the in-process limit"] is True
    assert bad["gRPC c=1 p50 latency"] is False


def test_precision_target_takes_the_fastest_precision_that_passed_the_probe():
    rows = [
        Row("precision", "in-process fp32, batch 8", 50.0),
        Row("precision", "in-process bf16, batch 8", 95.0),
        Row("precision", "in-process int8, batch 8", 200.0, notes="failed the probe; serves fp32"),
    ]
    (target,) = targets.precision_targets(rows)
    assert target.holds and target.measured.startswith("bf16 1.90x")
    (slow,) = targets.precision_targets(rows[:1] + [Row("precision", "in-process bf16, batch 8", 60.0)])
    assert not slow.holds
    (none,) = targets.precision_targets(rows[:1] + rows[2:])
    assert not none.holds and none.measured == "no reduced precision passes the probe"
    assert targets.precision_targets(rows[1:]) == [], "without fp32 there is nothing to compare with"


def test_scale_targets_read_the_server_rows_at_the_default_settings():
    rows = [
        Row("scale", "server HNSW 1M", 500.0, latencies_ms=[5.0, 12.0], unit="queries", notes="default", recall=0.97),
        Row("scale", "lite FLAT 1M", 50.0, latencies_ms=[80.0], unit="queries", notes="default", recall=1.0),
        Row("scale", "server IVF 1M", 900.0, latencies_ms=[3.0], unit="queries", notes="nprobe 8", recall=0.7),
    ]
    assert verdicts(targets.scale_targets(rows)) == {"search at scale, defaults: server HNSW 1M": True}
    rows[0].recall = 0.9
    assert verdicts(targets.scale_targets(rows)) == {"search at scale, defaults: server HNSW 1M": False}


def test_only_the_parts_that_ran_are_checked_and_the_gpu_ones_only_on_a_gpu():
    rows = serving_rows(grpc_c32=95.0, grpc_c1_p50=60.0)
    assert found_targets(["search"], rows, gpu=False) == []
    names = verdicts(found_targets(["serving"], rows, gpu=True))
    assert names["GPU in process, JPEG decode included"] is False, "100 images/s is far from 5,000"
    assert set(TARGETS) <= set(PARTS)


def test_the_table_lists_every_row_with_its_ratios():
    rows = serving_rows(grpc_c32=95.0, grpc_c1_p50=60.0) + [Row("search", "HNSW 5000", 812.5, unit="queries")]
    lines = report.table(rows).splitlines()
    grpc = next(line for line in lines if line.startswith("server gRPC c=32"))
    assert grpc.split()[-2:] == ["0.95", "3.17"]
    assert next(line for line in lines if line.startswith("HNSW 5000")).split()[2] == "812.5q"


def test_the_json_record_holds_the_context_rows_and_targets(tmp_path):
    rows = serving_rows(grpc_c32=95.0, grpc_c1_p50=60.0)
    found = targets.serving_targets(rows)
    path = tmp_path / "bench.json"
    report.write_json(path, rows, found, {"command": "python -m benchmarks run --quick"})
    record = json.loads(path.read_text())
    assert record["command"] == "python -m benchmarks run --quick"
    assert [row["name"] for row in record["rows"]] == [row.name for row in rows]
    assert [target["holds"] for target in record["targets"]] == [target.holds for target in found]


def test_parts_run_in_their_registered_order_and_an_unknown_one_is_named():
    assert chosen_parts("") == list(DEFAULT_PARTS)
    assert chosen_parts("scale, precision") == ["precision", "scale"]
    assert not {"search", "scale", "filtered"} & set(chosen_parts("", skip_search=True))
    assert "filtered" in chosen_parts("")
    assert chosen_parts("search", versus_ref="main") == ["search", "versus"]
    with pytest.raises(SystemExit, match="unknown part.*wobble.*choose from serving, cold-start, precision"):
        chosen_parts("serving,wobble")


def test_one_entry_point_holds_every_command():
    assert set(COMMANDS) == {
        "run",
        "soak",
        "perf-analyzer",
        "versus",
        "clip",
        "duplicate-threshold",
        "duplicate-scale",
    }
    assert parser().parse_args(["duplicate-scale", "--sizes", "2000"]).sizes == "2000"
    args = parser().parse_args(["run", "--quick", "--only", "search"])
    assert args.quick and args.only == "search" and args.handler is run_command.run
    assert parser().parse_args(["soak", "--duration-s", "5"]).duration_s == 5.0


def side_by_side_rows(grpc_c32: float, grpc_cores: float, peer_c32: float) -> list[Row]:
    """Both transports and the peers at c=1 and c=32, on a 2-core machine; the limit is 100 images/s at bf16."""

    def served(group: str, name: str, per_s: float, c: int, p50: float, cores: float | None) -> Row:
        return Row(group, f"{name}, c={c}", per_s, [p50], concurrency=c, server_cores=cores, cores=2)

    rows = [
        Row("limit", "in-process, batch 8", 100.0, notes="bf16; measured twice"),
        Row("limit", "in-process, one image", 20.0, latencies_ms=[50.0], concurrency=1),
        served("server", "server gRPC", grpc_c32, 32, 300.0, grpc_cores),
        served("server", "server gRPC", 18.0, 1, 55.0, 0.6),
        served("server", "server REST binary", 80.0, 32, 380.0, 1.7),
        served("server", "server REST binary", 17.0, 1, 58.0, 0.6),
        Row("server-batch", "server REST binary, 32 img/request, c=2", 95.0, [700.0], 2, 32),
        served("naive", "naive FastAPI", 35.0, 32, 900.0, 1.0),
        served("naive", "naive FastAPI", 30.0, 1, 35.0, 0.5),
        served("litserve", "LitServe peer", peer_c32, 32, 380.0, 1.3),
        served("litserve", "LitServe peer", 25.0, 1, 40.0, 0.55),
    ]
    add_ratios(rows)
    return rows


def test_the_busy_server_targets_read_cores_and_the_litserve_peer_at_32_callers():
    good = verdicts(targets.serving_targets(side_by_side_rows(grpc_c32=96.0, grpc_cores=1.9, peer_c32=75.0)))
    assert good["gRPC c=32 server CPU busy"] is True
    assert good["gRPC c=32 vs the LitServe peer"] is True, "96 against 75 images/s is 1.28x"
    assert good["gRPC c=32 vs the limit at the served precision"] is True
    # REST binary at 80 images/s and 1.7 cores misses each of the three.
    assert good["REST binary c=32 server CPU busy"] is False
    assert good["REST binary c=32 vs the LitServe peer"] is False, "80 against 75 is 1.07x"
    assert good["REST binary c=32 vs the limit at the served precision"] is False
    # 1.85 of 2 cores is the bound; 1.2x the peer is the other.
    found = targets.serving_targets(side_by_side_rows(grpc_c32=96.0, grpc_cores=1.84, peer_c32=81.0))
    bad = verdicts(found)
    assert bad["gRPC c=32 server CPU busy"] is False
    assert bad["gRPC c=32 vs the LitServe peer"] is False, "96 against 81 is 1.19x"
    cpu = next(target for target in found if target.name == "gRPC c=32 server CPU busy")
    assert (cpu.measured, cpu.wanted) == ("1.84 of 2 cores", ">= 1.85 of 2 cores")


def test_without_the_peer_or_a_cpu_reading_those_targets_are_not_made_up():
    rows = [row for row in side_by_side_rows(96.0, 1.9, 75.0) if row.group != "litserve"]
    for row in rows:
        row.server_cores = None
    add_ratios(rows)
    names = verdicts(targets.serving_targets(rows))
    assert not [name for name in names if "LitServe" in name or "CPU busy" in name]
    assert names["gRPC c=32 vs the in-process limit"] is True


def test_the_serving_table_puts_the_servers_side_by_side_at_each_concurrency():
    lines = report.serving_table(side_by_side_rows(grpc_c32=96.0, grpc_cores=1.9, peer_c32=75.0)).splitlines()
    assert lines[0].endswith("in-process limit 100.0 images/s (bf16), one image p50 50.0 ms")
    named = [line for line in lines if line.startswith(("server", "LitServe", "naive"))]
    assert [line.split(", c=")[0] for line in named] == [
        "server gRPC",
        "server REST binary",
        "LitServe peer",
        "naive FastAPI",
    ] * 2
    assert [line.split(", c=")[1].split()[0] for line in named] == ["1"] * 4 + ["32"] * 4
    # cores busy, images/s, x limit, x LitServe, p50 ms, p99 ms
    grpc_c32 = named[4].split(", c=32")[1].split()
    assert grpc_c32 == ["1.90/2", "96.0", "0.96", "1.28", "300.0", "300.0"]
    grpc_c1 = named[0].split(", c=1")[1].split()
    assert grpc_c1[-2] == "55.0", "p50 at c=1"
    assert not [line for line in lines if "32 img/request" in line], "many images per request is not side by side"


def test_the_serving_table_shows_a_dash_where_nothing_was_measured():
    rows = [Row("server", "server gRPC, c=8", 60.0, [100.0], concurrency=8)]
    (row_line,) = [line for line in report.serving_table(rows).splitlines() if line.startswith("server gRPC")]
    assert row_line.split(", c=8")[1].split() == ["-", "60.0", "-", "-", "100.0", "100.0"]
