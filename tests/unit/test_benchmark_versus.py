from benchmarks.stats import Row
from benchmarks.versus import summary


def _row(side: str, per_s: float, p50_ms: float, cores: float | None) -> Row:
    return Row(f"versus-{side}", side, per_s, [p50_ms], concurrency=32, server_cores=cores)


def test_the_summary_gives_the_medians_of_both_sides_with_the_servers_busy_cores():
    rows = [
        _row("before", 10.0, 100.0, 1.60),
        _row("after", 12.0, 90.0, 1.80),
        _row("before", 14.0, 120.0, 1.70),
        _row("after", 11.0, 95.0, 1.75),
        _row("before", 12.0, 110.0, 1.65),
        _row("after", 18.0, 80.0, 1.90),
    ]

    assert summary(rows) == ["c=32: 12.0 -> 12.0 images/s (x1.00); p50 110 -> 90 ms; server cores busy 1.65 -> 1.80"]


def test_a_side_without_cpu_figures_still_gets_its_throughput_compared():
    rows = [_row("before", 10.0, 100.0, None), _row("after", 15.0, 100.0, None)]

    assert summary(rows) == [
        "c=32: 10.0 -> 15.0 images/s (x1.50); p50 100 -> 100 ms; server cores busy unknown -> unknown"
    ]
