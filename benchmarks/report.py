"""The printed table, the JSON record and the chart of one benchmark run."""

import json
from pathlib import Path

from benchmarks.stats import PEER, Row, limit_rows
from benchmarks.targets import MIN_RATIO_TO_LIMIT, Target


def _number(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def table(rows: list[Row]) -> str:
    header = f"{'':<46} {'per s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'x limit':>8} {'x naive':>8}"
    lines = [header, "-" * len(header)]
    group = None
    for row in rows:
        if row.group != group and group is not None:
            lines.append("")
        group = row.group
        per_s = f"{row.per_s:.1f}" + ("q" if row.unit == "queries" else "")
        digits = 2 if row.unit == "queries" else 1
        lines.append(
            f"{row.name:<46} {per_s:>8} {_number(row.p50, digits):>8} {_number(row.p95, digits):>8} "
            f"{_number(row.p99, digits):>8} {_number(row.ratio_to_limit, 2):>8} {_number(row.ratio_to_baseline, 2):>8}"
        )
    lines.append("per s: images per second; 'q' marks search rows, in queries per second.")
    return "\n".join(lines)


# The servers side by side at each concurrency, in this order: this server's transports, the peer, the naive one.
SIDE_BY_SIDE = (("server", "server gRPC"), ("server", "server REST binary"), (PEER, ""), ("naive", ""))


def _side(row: Row) -> int | None:
    return next(
        (i for i, (group, prefix) in enumerate(SIDE_BY_SIDE) if row.group == group and row.name.startswith(prefix)),
        None,
    )


def serving_table(rows: list[Row]) -> str:
    """One image per request, at each concurrency: the cores each server kept busy, its images/s, and that against
    the in-process limit and the LitServe peer; p50 at c=1 is the latency figure to keep."""
    served = [row for row in rows if row.images_per_request == 1 and row.concurrency and _side(row) is not None]
    served.sort(key=lambda row: (row.concurrency, _side(row)))
    title = "Serving side by side (one image per request)"
    if (pair := limit_rows(rows)) is not None:
        limit, single = pair
        at = limit.notes.split(";")[0]
        title += f"; in-process limit {limit.per_s:.1f} images/s ({at}), one image p50 {_number(single.p50)} ms"
    header = (
        f"{'':<34} {'cores busy':>10} {'images/s':>9} {'x limit':>8} {'x LitServe':>10} {'p50 ms':>8} {'p99 ms':>8}"
    )
    lines = [title, header, "-" * len(header)]
    for index, row in enumerate(served):
        if index and served[index - 1].concurrency != row.concurrency:
            lines.append("")
        busy = "-" if row.server_cores is None else f"{row.server_cores:.2f}/{row.cores}"
        lines.append(
            f"{row.name:<34} {busy:>10} {row.per_s:>9.1f} {_number(row.ratio_to_limit, 2):>8} "
            f"{_number(row.ratio_to_peer, 2):>10} {_number(row.p50):>8} {_number(row.p99):>8}"
        )
    lines.append(
        "cores busy: the server's CPU time (a peer's: all its processes') over the wall time, of the cores the run had."
    )
    return "\n".join(lines)


def write_json(path: Path, rows: list[Row], found: list[Target], context: dict) -> None:
    record = {
        **context,
        "rows": [row.to_json() for row in rows],
        "targets": [target.__dict__ for target in found],
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


def write_chart(path: Path, rows: list[Row], title: str) -> bool:
    """The serving chart; False (and no file) when the serving part did not run."""
    if limit_rows(rows) is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limit, single = limit_rows(rows)
    figure, (throughput_axis, latency_axis, search_axis) = plt.subplots(1, 3, figsize=(18, 5.5))
    figure.suptitle(title, fontsize=10)

    served = [row for row in rows if row.group in ("server", "naive", "server-batch", PEER)]
    colours = {"server": "tab:blue", "server-batch": "tab:cyan", "naive": "tab:orange", PEER: "tab:purple"}
    labels = [
        row.name.replace("server ", "").replace("naive FastAPI", "naive").replace("LitServe peer", "LitServe")
        for row in served
    ]
    throughput_axis.barh(labels, [row.per_s for row in served], color=[colours[row.group] for row in served])
    throughput_axis.axvline(limit.per_s, color="black", linestyle="--", label=f"in-process limit {limit.per_s:.0f}/s")
    throughput_axis.axvline(
        MIN_RATIO_TO_LIMIT * limit.per_s, color="grey", linestyle=":", label=f"{MIN_RATIO_TO_LIMIT:.0%} of the limit"
    )
    throughput_axis.invert_yaxis()
    throughput_axis.set_xlabel("images per second")
    throughput_axis.legend(loc="lower right", fontsize=8)

    series_colours = (
        ("server gRPC", "tab:blue"),
        ("server REST binary", "tab:green"),
        ("LitServe peer", "tab:purple"),
        ("naive", "tab:orange"),
    )
    for name, colour in series_colours:
        series = sorted(
            (row for row in rows if row.name.startswith(name) and row.images_per_request == 1),
            key=lambda row: row.concurrency,
        )
        if series:
            levels = [row.concurrency for row in series]
            latency_axis.plot(levels, [row.p50 for row in series], marker="o", color=colour, label=f"{name} p50")
            latency_axis.plot(levels, [row.p99 for row in series], marker="x", linestyle="--", color=colour)
    latency_axis.axhline(single.p50, color="black", linestyle="--", label=f"in-process one image {single.p50:.0f} ms")
    latency_axis.set_xscale("log", base=2)
    latency_axis.set_xlabel("concurrent requests (dashed: p99)")
    latency_axis.set_ylabel("latency per request, ms")
    latency_axis.legend(fontsize=8)

    searches = [row for row in rows if row.group == "search" and row.images_per_request == 1]
    engines: dict[str, list[tuple[int, float]]] = {}
    for row in searches:
        engine, size = row.name.rsplit(", ", 1)
        engines.setdefault(engine, []).append((int(size.rstrip("k")) * 1000, row.p50))
    if engines:
        for engine, points in engines.items():
            search_axis.plot(*zip(*sorted(points), strict=True), marker="o", label=engine)
        search_axis.set_xscale("log")
        search_axis.set_yscale("log")
        search_axis.set_xlabel("vectors in the collection")
        search_axis.set_ylabel("p50 latency per query, ms")
        search_axis.legend(fontsize=8)
    else:
        search_axis.text(0.5, 0.5, "search part not run", ha="center", va="center", transform=search_axis.transAxes)
        search_axis.set_axis_off()

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
