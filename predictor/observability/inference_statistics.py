"""Triton's statistics extension: what each model has served, as cumulative counts and durations in nanoseconds.

A request that succeeds adds its time to `success` and splits it into Triton's stages as this server runs them:
`compute_input` (parsing the request, decoding and preprocessing its images), `queue` (the longest wait of its images
in the micro-batch queue), `compute_infer` (the forward pass and the search, less that wait) and `compute_output`
(building the response). A request that fails adds its time to `fail` only, as Triton does. `inference_count` counts
queries (images, embeddings or ids); `execution_count` counts forward passes, plus one for each request that needed
none (an embedding or id query is one search).

Triton's model versions are integers, and perf_analyzer reads the `version` of statistics as one (`std::stoll`) to
find the model's entry. This server serves one version of each model, named by the model package (for example
`letterbox288-gem-1-centre-a084566e`), so its statistics give that version when it is a number and `1` otherwise;
the model metadata (`GET /v2/models/<name>`) names the version served.
"""

import contextlib
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = [
    "STATISTICS_VERSION",
    "STAGES",
    "InferenceStatistics",
    "RequestTiming",
    "add_to_current_request",
    "queued_in_current_request",
]

# The version statistics give a model whose version is not an integer (see above).
STATISTICS_VERSION = "1"
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
_DURATIONS = ("success", "fail", *STAGES)


@dataclass
class RequestTiming:
    """One request's stage times in nanoseconds; `stage` times a block, the helpers below add what others measured."""

    started_ns: int = field(default_factory=time.perf_counter_ns)
    stages_ns: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    inferences: int = 1
    batched: bool = False
    # Time measured inside `compute_infer` that belongs to another stage (the queue, image decoding).
    within_infer_ns: int = 0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter_ns()
        try:
            yield
        finally:
            self.stages_ns[name] += time.perf_counter_ns() - started


_current: ContextVar[RequestTiming | None] = ContextVar("inference_statistics_request", default=None)


def queued_in_current_request(seconds: float) -> None:
    """The micro-batcher calls this in the caller's context with how long the caller's item waited for its batch."""
    timing = _current.get()
    if timing is not None:
        timing.batched = True
        longest = max(timing.stages_ns["queue"], int(seconds * 1e9))
        timing.within_infer_ns += longest - timing.stages_ns["queue"]
        timing.stages_ns["queue"] = longest


def add_to_current_request(stage: str, nanoseconds: int) -> None:
    """Count time measured inside `compute_infer` (image decoding, in the model's predict) as `stage`."""
    timing = _current.get()
    if timing is not None:
        timing.stages_ns[stage] += nanoseconds
        timing.within_infer_ns += nanoseconds


class InferenceStatistics:
    """One model's statistics; thread-safe, read with `snapshot()` in the shape of Triton's REST `/stats` answer."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version if version.isdigit() else STATISTICS_VERSION
        self._lock = threading.Lock()
        self._durations = {name: [0, 0] for name in _DURATIONS}
        self._inference_count = 0
        self._execution_count = 0
        self._last_inference_ms = 0

    @contextlib.contextmanager
    def request(self) -> Iterator[RequestTiming]:
        timing = RequestTiming()
        token = _current.set(timing)
        try:
            yield timing
        except BaseException:
            self._record(timing, succeeded=False)
            raise
        else:
            self._record(timing, succeeded=True)
        finally:
            _current.reset(token)

    def executed(self) -> None:
        """One forward pass (the micro-batcher's `on_batch`)."""
        with self._lock:
            self._execution_count += 1

    def _record(self, timing: RequestTiming, succeeded: bool) -> None:
        total = time.perf_counter_ns() - timing.started_ns
        stages = dict(timing.stages_ns)
        stages["compute_infer"] = max(0, stages["compute_infer"] - timing.within_infer_ns)
        with self._lock:
            if not succeeded:
                self._add("fail", total)
                return
            self._add("success", total)
            for stage in STAGES:
                self._add(stage, stages[stage])
            self._inference_count += timing.inferences
            if not timing.batched:
                self._execution_count += 1
            self._last_inference_ms = time.time_ns() // 1_000_000

    def _add(self, duration: str, nanoseconds: int) -> None:
        entry = self._durations[duration]
        entry[0] += 1
        entry[1] += nanoseconds

    def snapshot(self) -> dict:
        with self._lock:
            durations = {name: {"count": count, "ns": ns} for name, (count, ns) in self._durations.items()}
            return {
                "name": self.name,
                "version": self.version,
                "last_inference": self._last_inference_ms,
                "inference_count": self._inference_count,
                "execution_count": self._execution_count,
                # This server keeps no response cache; Triton's readers expect the entries.
                "inference_stats": {
                    **durations,
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [],
                "memory_usage": [],
            }
