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
    with pytest.raises(SystemExit, match="unknown part.*wobble.*choose from serving, precision"):
        chosen_parts("serving,wobble")


def test_one_entry_point_holds_every_command():
    assert set(COMMANDS) == {"run", "soak", "perf-analyzer", "versus", "clip", "duplicate-threshold"}
    args = parser().parse_args(["run", "--quick", "--only", "search"])
    assert args.quick and args.only == "search" and args.handler is run_command.run
    assert parser().parse_args(["soak", "--duration-s", "5"]).duration_s == 5.0
