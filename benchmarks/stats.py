"""One row of the benchmark table and the arithmetic behind it."""

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Row:
    """A measured configuration: throughput per second (images, or queries for search) and latency per request."""

    group: str  # precision | limit | server | naive | search | scale
    name: str
    per_s: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    concurrency: int | None = None
    images_per_request: int = 1
    unit: str = "images"
    notes: str = ""
    ratio_to_limit: float | None = None
    ratio_to_baseline: float | None = None
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
