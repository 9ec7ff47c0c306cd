"""What each part of the benchmark must reach: thresholds and the checks of one run's rows against them.

`benchmarks.run.TARGETS` names the checks of each part; a part without any simply records its rows.
"""

from dataclasses import dataclass

from benchmarks.stats import PEER, Row, find, limit_rows

MIN_RATIO_TO_LIMIT = 0.8
MIN_RATIO_TO_BASELINE = 2.0
LATENCY_FACTOR, LATENCY_SLACK_MS = 1.3, 10.0
# Reduced precision: the best served reduced precision against fp32 in process, and the server at 32 callers
# against the limit at the precision it serves.
MIN_PRECISION_SPEED_UP = 1.8
MIN_SERVED_RATIO_TO_NEW_LIMIT = 0.9
# On a CPU, at 32 callers with the load generator on the same machine: the share of the cores the server keeps busy
# (1.85 of 2), and its speed against a LitServe server built on the same network code.
MIN_BUSY_SHARE_OF_CORES = 0.925
MIN_RATIO_TO_PEER = 1.2
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
    busy = find(rows, "server", 64, "server gRPC")
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


def serving_targets(rows: list[Row]) -> list[Target]:
    found: list[Target] = []
    if limit_rows(rows) is None:
        return found
    limit, single = limit_rows(rows)
    at = limit.notes.split(";")[0]
    for transport in ("gRPC", "REST binary"):
        busy = find(rows, "server", 32, f"server {transport}")
        if busy is not None:
            found.append(
                Target(
                    f"{transport} c=32 vs the limit at the served precision",
                    f"{busy.ratio_to_limit:.0%} ({busy.per_s:.1f} of {limit.per_s:.1f} images/s at {at})",
                    f">= {MIN_SERVED_RATIO_TO_NEW_LIMIT:.0%}",
                    busy.ratio_to_limit >= MIN_SERVED_RATIO_TO_NEW_LIMIT,
                )
            )
    for transport in ("gRPC", "REST binary"):
        busy = find(rows, "server", 32, f"server {transport}")
        idle = find(rows, "server", 1, f"server {transport}")
        if busy is not None:
            found.append(
                Target(
                    f"{transport} c=32 vs the in-process limit",
                    f"{busy.ratio_to_limit:.0%} ({busy.per_s:.1f} of {limit.per_s:.1f} images/s)",
                    f">= {MIN_RATIO_TO_LIMIT:.0%}",
                    busy.ratio_to_limit >= MIN_RATIO_TO_LIMIT,
                )
            )
            naive = find(rows, "naive", 32)
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
    return found + busy_server_targets(rows)


def busy_server_targets(rows: list[Row]) -> list[Target]:
    """At 32 callers, each transport: the cores the server kept busy, and its speed against the LitServe peer."""
    found: list[Target] = []
    peer = find(rows, PEER, 32)
    for transport in ("gRPC", "REST binary"):
        busy = find(rows, "server", 32, f"server {transport}")
        if busy is None:
            continue
        if busy.server_cores is not None and busy.cores:
            wanted = MIN_BUSY_SHARE_OF_CORES * busy.cores
            found.append(
                Target(
                    f"{transport} c=32 server CPU busy",
                    f"{busy.server_cores:.2f} of {busy.cores} cores",
                    f">= {wanted:.2f} of {busy.cores} cores",
                    busy.server_cores >= wanted,
                )
            )
        if peer is not None and busy.ratio_to_peer is not None:
            found.append(
                Target(
                    f"{transport} c=32 vs the LitServe peer",
                    f"{busy.ratio_to_peer:.2f}x ({busy.per_s:.1f} against {peer.per_s:.1f} images/s)",
                    f">= {MIN_RATIO_TO_PEER:.1f}x",
                    busy.ratio_to_peer >= MIN_RATIO_TO_PEER,
                )
            )
    return found
