"""Ratios, targets, the printed table, the JSON record and the chart of one benchmark run."""

import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.stats import Row

MIN_RATIO_TO_LIMIT = 0.8
MIN_RATIO_TO_BASELINE = 2.0
LATENCY_FACTOR, LATENCY_SLACK_MS = 1.3, 10.0
# Reduced precision: the best served reduced precision against fp32 in process, and the server at 32 callers
# against the limit at the precision it serves.
MIN_PRECISION_SPEED_UP = 1.8
MIN_SERVED_RATIO_TO_NEW_LIMIT = 0.9
# On one H100/H200-class GPU: in process, and gRPC at 64 callers as a share of it.
MIN_GPU_IMAGES_PER_S = 5000.0
MIN_GPU_GRPC_SHARE = 0.6
# Search at a realistic scale, on the Milvus server at the default index settings.
MIN_SCALE_RECALL = 0.95
MAX_SCALE_P99_MS = 20.0


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    wanted: str
    holds: bool


def _find(rows: list[Row], group: str, concurrency: int | None = None, startswith: str = "") -> Row | None:
    for row in rows:
        if row.group == group and row.name.startswith(startswith):
            if concurrency is None or row.concurrency == concurrency:
                return row
    return None


def limit_rows(rows: list[Row]) -> tuple[Row, Row] | None:
    """The limit and the single-image row, when the serving part ran."""
    throughput = next((row for row in rows if row.group == "limit" and row.concurrency is None), None)
    single = next((row for row in rows if row.group == "limit" and row.concurrency == 1), None)
    return (throughput, single) if throughput and single else None


def add_ratios(rows: list[Row]) -> None:
    if limit_rows(rows) is None:
        return
    limit, _ = limit_rows(rows)
    for row in rows:
        if row.unit != "images":
            continue
        row.ratio_to_limit = row.per_s / limit.per_s
        naive = _find(rows, "naive", row.concurrency or 32)
        if naive is not None and row.group in ("server", "server-batch", "naive") and naive.per_s > 0:
            row.ratio_to_baseline = row.per_s / naive.per_s


def _precision_label(row: Row) -> str:
    """ "bf16 compiled" of "in-process bf16 compiled, batch 8"."""
    return row.name.removeprefix("in-process ").split(", batch")[0]


def precision_targets(rows: list[Row]) -> list[Target]:
    measured = {_precision_label(row): row for row in rows if row.group == "precision"}
    fp32 = measured.get("fp32")
    served = [row for name, row in measured.items() if name != "fp32" and "serves fp32" not in row.notes]
    if fp32 is None:
        return []
    best = max(served, key=lambda row: row.per_s, default=None)
    if best is None:
        return [
            Target("reduced precision vs fp32 in process", "no reduced precision passes the probe", ">= 1.8x", False)
        ]
    return [
        Target(
            "reduced precision vs fp32 in process",
            f"{_precision_label(best)} {best.per_s / fp32.per_s:.2f}x ({best.per_s:.1f} against "
            f"{fp32.per_s:.1f} images/s)",
            f">= {MIN_PRECISION_SPEED_UP}x",
            best.per_s / fp32.per_s >= MIN_PRECISION_SPEED_UP,
        )
    ]


def gpu_targets(rows: list[Row]) -> list[Target]:
    found = []
    pair = limit_rows(rows)
    if pair is None:
        return found
    limit, _ = pair
    found.append(
        Target(
            "GPU in process, JPEG decode included",
            f"{limit.per_s:.0f} images/s",
            f">= {MIN_GPU_IMAGES_PER_S:.0f}",
            limit.per_s >= MIN_GPU_IMAGES_PER_S,
        )
    )
    busy = _find(rows, "server", 64, "server gRPC")
    if busy is not None:
        found.append(
            Target(
                "GPU gRPC c=64 vs the in-process limit",
                f"{busy.per_s / limit.per_s:.0%} ({busy.per_s:.0f} images/s)",
                f">= {MIN_GPU_GRPC_SHARE:.0%}",
                busy.per_s / limit.per_s >= MIN_GPU_GRPC_SHARE,
            )
        )
    return found


def scale_targets(rows: list[Row]) -> list[Target]:
    chosen = [row for row in rows if row.group == "scale" and "default" in row.notes and "server" in row.name]
    return [
        Target(
            f"search at scale, defaults: {row.name}",
            f"recall@10 {row.recall:.3f}, p99 {row.p99:.1f} ms",
            f"recall >= {MIN_SCALE_RECALL}, p99 < {MAX_SCALE_P99_MS:.0f} ms",
            row.recall >= MIN_SCALE_RECALL and row.p99 < MAX_SCALE_P99_MS,
        )
        for row in chosen
    ]


def targets(rows: list[Row], gpu: bool = False) -> list[Target]:
    found = precision_targets(rows) + scale_targets(rows) + (gpu_targets(rows) if gpu else [])
    if limit_rows(rows) is None:
        return found
    limit, single = limit_rows(rows)
    busy = _find(rows, "server", 32, "server gRPC")
    if busy is not None:
        at = limit.notes.split(";")[0]
        found.append(
            Target(
                "gRPC c=32 vs the limit at the served precision",
                f"{busy.ratio_to_limit:.0%} ({busy.per_s:.1f} of {limit.per_s:.1f} images/s at {at})",
                f">= {MIN_SERVED_RATIO_TO_NEW_LIMIT:.0%}",
                busy.ratio_to_limit >= MIN_SERVED_RATIO_TO_NEW_LIMIT,
            )
        )
    for transport in ("gRPC", "REST binary"):
        busy = _find(rows, "server", 32, f"server {transport}")
        idle = _find(rows, "server", 1, f"server {transport}")
        if busy is not None:
            found.append(
                Target(
                    f"{transport} c=32 vs the in-process limit",
                    f"{busy.ratio_to_limit:.0%} ({busy.per_s:.1f} of {limit.per_s:.1f} images/s)",
                    f">= {MIN_RATIO_TO_LIMIT:.0%}",
                    busy.ratio_to_limit >= MIN_RATIO_TO_LIMIT,
                )
            )
            naive = _find(rows, "naive", 32)
            if busy.ratio_to_baseline is not None and naive is not None:
                ceiling = limit.per_s / naive.per_s
                found.append(
                    Target(
                        f"{transport} c=32 vs the naive server",
                        f"{busy.ratio_to_baseline:.2f}x (the in-process limit is {ceiling:.2f}x the naive server)",
                        f">= {MIN_RATIO_TO_BASELINE:.1f}x",
                        busy.ratio_to_baseline >= MIN_RATIO_TO_BASELINE,
                    )
                )
        if idle is not None and idle.p50 is not None:
            bound = LATENCY_FACTOR * single.p50 + LATENCY_SLACK_MS
            found.append(
                Target(
                    f"{transport} c=1 p50 latency",
                    f"{idle.p50:.1f} ms (in-process one image: {single.p50:.1f} ms)",
                    f"<= {bound:.1f} ms ({LATENCY_FACTOR} x {single.p50:.1f} + {LATENCY_SLACK_MS:.0f})",
                    idle.p50 <= bound,
                )
            )
    return found


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

    served = [row for row in rows if row.group in ("server", "naive", "server-batch")]
    colours = {"server": "tab:blue", "server-batch": "tab:cyan", "naive": "tab:orange"}
    labels = [row.name.replace("server ", "").replace("naive FastAPI", "naive") for row in served]
    throughput_axis.barh(labels, [row.per_s for row in served], color=[colours[row.group] for row in served])
    throughput_axis.axvline(limit.per_s, color="black", linestyle="--", label=f"in-process limit {limit.per_s:.0f}/s")
    throughput_axis.axvline(
        MIN_RATIO_TO_LIMIT * limit.per_s, color="grey", linestyle=":", label=f"{MIN_RATIO_TO_LIMIT:.0%} of the limit"
    )
    throughput_axis.invert_yaxis()
    throughput_axis.set_xlabel("images per second")
    throughput_axis.legend(loc="lower right", fontsize=8)

    for name, colour in (("server gRPC", "tab:blue"), ("server REST binary", "tab:green"), ("naive", "tab:orange")):
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
