"""One row of the benchmark table and the arithmetic behind it."""

from dataclasses import asdict, dataclass, field

import numpy as np

# The groups of rows measured through a server, and the LitServe peer's among them.
PEER = "litserve"
SERVED = ("server", "server-batch", "naive", PEER)


@dataclass
class Row:
    """A measured configuration: throughput per second (images, or queries for search) and latency per request."""

    group: str  # precision | limit | server | naive | litserve | search | scale
    name: str
    per_s: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    concurrency: int | None = None
    images_per_request: int = 1
    unit: str = "images"
    notes: str = ""
    ratio_to_limit: float | None = None
    ratio_to_baseline: float | None = None
    ratio_to_peer: float | None = None  # against the LitServe peer at the same concurrency
    server_cores: float | None = None  # cores the server's threads (or processes) kept busy over the row
    cores: int | None = None  # cores the benchmark could run on, the server and the load generator together
    recall: float | None = None  # search rows: recall@10 against exact search

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    @property
    def p50(self) -> float | None:
        return self.percentile(50)

    @property
    def p95(self) -> float | None:
        return self.percentile(95)

    @property
    def p99(self) -> float | None:
        return self.percentile(99)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("latencies_ms")
        data.update(requests=len(self.latencies_ms), p50_ms=self.p50, p95_ms=self.p95, p99_ms=self.p99)
        return data


def find(rows: list[Row], group: str, concurrency: int | None = None, startswith: str = "") -> Row | None:
    """The first row of `group` (at `concurrency`, named starting with `startswith`), if any."""
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
    """Each image row against the in-process limit, and each server row against the naive one and the LitServe peer
    at its concurrency."""
    if limit_rows(rows) is None:
        return
    limit, _ = limit_rows(rows)
    for row in rows:
        if row.unit != "images":
            continue
        row.ratio_to_limit = row.per_s / limit.per_s
        naive = find(rows, "naive", row.concurrency or 32)
        if naive is not None and row.group in SERVED and naive.per_s > 0:
            row.ratio_to_baseline = row.per_s / naive.per_s
        peer = find(rows, PEER, row.concurrency) if row.concurrency is not None else None
        if peer is not None and row.group in SERVED and peer.per_s > 0:
            row.ratio_to_peer = row.per_s / peer.per_s
