"""Prometheus metrics of the image search service: every metric the service exports is defined here.

Metrics live in prometheus_client's default registry, which KServe serves at ``/metrics`` on the HTTP port. There is one
server process per pod, so no multiprocess collector is needed. All model-scoped metrics carry the labels ``model`` and
``model_version`` so that a canary and the stable revision can be compared side by side.

Drift score: each model keeps an exponentially weighted centroid of the L2-normalised query embeddings (half-life of
``DRIFT_HALF_LIFE_QUERIES`` queries) and exports the cosine distance ``1 - cos(recent centroid, reference centroid)``,
where the reference is the mean of a sample of the vectors in the index. It is 0 when users send what the catalogue
holds and grows as the kind of query images moves away from it. Cosine distance is used because both centroids are means
of unit vectors of different spread, so only their directions are comparable.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

import numpy as np
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

__all__ = [
    "DRIFT_HALF_LIFE_QUERIES",
    "DRIFT_MIN_QUERIES",
    "CANCELLED",
    "ERROR_REASONS",
    "OUTCOMES",
    "STAGES",
    "RequestTracker",
    "ServingMetrics",
    "set_build_info",
    "set_index_rows",
    "set_serving_network",
    "start_gpu_metrics",
]

log = logging.getLogger(__name__)

STAGES = ("decode", "preprocess", "embed", "search")
ERROR_REASONS = ("bad_input", "milvus_unavailable", "timeout", "internal")
# A request whose client gave up (it went away, or its own deadline passed first): not an error of the server, so it
# has no error reason and stays out of the error ratio, but it is counted, under its own outcome.
CANCELLED = "cancelled"
OUTCOMES = ("success", *ERROR_REASONS, CANCELLED)

DRIFT_HALF_LIFE_QUERIES = 1000
# Below this many queries the recent centroid is a handful of images, and a score from it would be noise.
DRIFT_MIN_QUERIES = 50

# `_created` series double the series count and no dashboard or alert reads them.
disable_created_metrics()

_MODEL_LABELS = ("model", "model_version")

STAGE_SECONDS = Histogram(
    "image_search_stage_duration_seconds",
    "Time spent in one stage of serving a request (decode, preprocess, embed, search).",
    [*_MODEL_LABELS, "stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REQUEST_SECONDS = Histogram(
    "image_search_request_duration_seconds",
    "Time from receiving a request to its response, by outcome (success or the error reason).",
    [*_MODEL_LABELS, "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
REQUESTS = Counter(
    "image_search_requests",
    "Requests served, by outcome (success or the error reason).",
    [*_MODEL_LABELS, "outcome"],
)
INFLIGHT = Gauge(
    "image_search_requests_in_flight",
    "Requests being served right now.",
    _MODEL_LABELS,
)
SEARCH_WAITING = Gauge(
    "image_search_search_waiting_queries",
    "Queries waiting for a free Milvus search worker. Past the backlog's bound (1024) new ones are refused with 503"
    " (UNAVAILABLE) rather than queued to time out.",
    _MODEL_LABELS,
)
ERRORS = Counter(
    "image_search_errors",
    "Errors by reason: bad_input, milvus_unavailable, timeout, internal.",
    [*_MODEL_LABELS, "reason"],
)
IMAGES = Counter(
    "image_search_images_processed",
    "Images embedded, counted one by one (a request may carry several).",
    _MODEL_LABELS,
)
BATCH_SIZE = Histogram(
    "image_search_batch_size_images",
    "Images in one forward pass of the embedding model.",
    _MODEL_LABELS,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_WAIT_SECONDS = Histogram(
    "image_search_queue_wait_seconds",
    "Time an image waited in the micro-batch queue before its forward pass started.",
    _MODEL_LABELS,
    # Up to 10 s: a CPU pod under load queues images for seconds, and a quantile cannot read past the last bucket.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TOP1_SIMILARITY = Histogram(
    "image_search_top1_similarity",
    "Cosine similarity between a query and its nearest neighbour in the index (1 is identical).",
    _MODEL_LABELS,
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0),
)
DRIFT_SCORE = Gauge(
    "image_search_query_drift_score",
    "Cosine distance between the exponentially weighted centroid of recent query embeddings and the centroid of the "
    "indexed vectors (0 means queries look like the catalogue).",
    _MODEL_LABELS,
)
INDEX_ROWS = Gauge(
    "image_search_index_rows",
    "Vectors in the Milvus collection.",
    ["collection"],
)
BUILD_INFO = Gauge(
    "image_search_build_info",
    "Always 1; the labels say which build serves which model version on which device, at which numeric precision.",
    ["version", "model", "model_version", "device", "precision"],
)
NETWORK_COMPILED = Gauge(
    "image_search_network_compiled",
    "1 once the network compiled in the background serves the tower, 0 while the eager one does (from load on, and"
    " for good where compiling is off or failed).",
    [*_MODEL_LABELS, "tower"],
)
NETWORK_SERVING_SINCE = Gauge(
    "image_search_network_serving_since_timestamp_seconds",
    "Unix time at which the network now serving the tower began to: its load, or the swap to the compiled one.",
    [*_MODEL_LABELS, "tower"],
)
GPU_UTILIZATION = Gauge(
    "image_search_gpu_utilization_ratio",
    "Fraction of the last sample period in which the GPU was busy, from NVML. Only exported on CUDA devices.",
    ["device"],
)
GPU_MEMORY_USED = Gauge(
    "image_search_gpu_memory_used_bytes",
    "GPU memory in use by all processes, from NVML. Only exported on CUDA devices.",
    ["device"],
)
GPU_MEMORY_TOTAL = Gauge(
    "image_search_gpu_memory_total_bytes",
    "GPU memory installed, from NVML. Only exported on CUDA devices.",
    ["device"],
)


def set_build_info(version: str, model_name: str, model_version: str, device: str, precision: str) -> None:
    """Export ``image_search_build_info`` = 1 for one served model."""
    BUILD_INFO.labels(
        version=version, model=model_name, model_version=model_version, device=device, precision=precision
    ).set(1)


def set_serving_network(model: str, model_version: str, tower: str, network: str) -> None:
    """Export which network serves a model's tower, "eager" or "compiled", and since when."""
    _check(network, ("eager", "compiled"), "network")
    labels = {"model": model, "model_version": model_version, "tower": tower}
    NETWORK_COMPILED.labels(**labels).set(1 if network == "compiled" else 0)
    NETWORK_SERVING_SINCE.labels(**labels).set(time.time())


def set_index_rows(collection: str, rows: int) -> None:
    """Export the number of vectors in a Milvus collection."""
    if rows < 0:
        raise ValueError(f"rows must be 0 or more, got {rows}")
    INDEX_ROWS.labels(collection=collection).set(rows)


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}")


class _StageTimer:
    __slots__ = ("_histogram", "_start")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self._histogram.observe(time.perf_counter() - self._start)


class RequestTracker:
    """Tracks one request: in flight while the ``with`` block runs, then timed and counted under its outcome.

    The outcome is ``success`` unless ``fail(reason)`` or ``cancel()`` was called, or an exception left the block
    (``cancelled`` for an ``asyncio.CancelledError``: the client went away; ``timeout`` for a ``TimeoutError``;
    ``internal`` otherwise). A failed request also counts once in ``image_search_errors_total``; a cancelled one does
    not.
    """

    __slots__ = ("_metrics", "_start", "_reason", "_cancelled")

    def __init__(self, metrics: ServingMetrics) -> None:
        self._metrics = metrics
        self._start = 0.0
        self._reason: str | None = None
        self._cancelled = False

    @property
    def outcome(self) -> str:
        return self._reason or (CANCELLED if self._cancelled else "success")

    def fail(self, reason: str) -> None:
        """Mark the request as failed; the first reason given is kept because it is the cause, later ones follow."""
        _check(reason, ERROR_REASONS, "error reason")
        if self._reason is None and not self._cancelled:
            self._reason = reason

    def cancel(self) -> None:
        """Mark the request as given up by its client, unless it had already failed."""
        if self._reason is None:
            self._cancelled = True

    def __enter__(self) -> RequestTracker:
        self._metrics._inflight.inc()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._start
        if exc_type is not None and self._reason is None and not self._cancelled:
            if issubclass(exc_type, asyncio.CancelledError):
                self._cancelled = True
            else:
                self._reason = "timeout" if issubclass(exc_type, TimeoutError) else "internal"
        metrics = self._metrics
        outcome = self.outcome
        metrics._request_seconds[outcome].observe(elapsed)
        metrics._requests[outcome].inc()
        if self._reason is not None:
            metrics._errors[self._reason].inc()
        metrics._inflight.dec()


class _DriftTracker:
    """Exponentially weighted centroid of query embeddings, compared with a reference centroid."""

    def __init__(self, half_life_queries: int, min_queries: int) -> None:
        self._lock = threading.Lock()
        self._decay_per_query = 0.5 ** (1.0 / half_life_queries)
        self._min_queries = min_queries
        self._centroid: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._queries = 0

    def set_reference(self, centroid: np.ndarray) -> float | None:
        reference = np.asarray(centroid, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(reference))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("the reference centroid must be a finite, non-zero vector")
        with self._lock:
            if self._centroid is not None and self._centroid.shape != reference.shape:
                self._centroid = None
                self._queries = 0
            self._reference = reference / norm
            return self._score()

    def observe(self, embeddings: np.ndarray) -> float | None:
        if embeddings.ndim != 2:
            raise ValueError(f"query embeddings must be an [n, d] array, got shape {embeddings.shape}")
        count = embeddings.shape[0]
        if count == 0:
            return None
        # The mean of a batch stands in for its queries one by one: direction is all the score reads.
        mean = embeddings.mean(axis=0, dtype=np.float64)
        decay = self._decay_per_query**count
        with self._lock:
            if self._reference is not None and mean.shape != self._reference.shape:
                raise ValueError(
                    f"query embeddings have dimension {mean.shape[0]}, the reference {self._reference.shape[0]}"
                )
            if self._centroid is None or self._centroid.shape != mean.shape:
                self._centroid = np.zeros_like(mean)
                self._queries = 0
            self._centroid *= decay
            mean *= 1.0 - decay
            self._centroid += mean
            self._queries += count
            return self._score()

    def _score(self) -> float | None:
        if self._reference is None or self._centroid is None or self._queries < self._min_queries:
            return None
        norm = float(np.linalg.norm(self._centroid))
        if norm == 0.0:
            return None
        cosine = float(self._centroid @ self._reference) / norm
        return max(0.0, 1.0 - cosine)


class ServingMetrics:
    """The metrics of one served model; label values ``model`` and ``model_version`` are fixed here.

    Safe to call from worker threads: prometheus_client metrics take their own locks, the drift state has one.
    """

    def __init__(self, model_name: str, model_version: str) -> None:
        if not model_name or not model_version:
            raise ValueError("model_name and model_version must be non-empty: they label every metric of the model")
        self.model_name = model_name
        self.model_version = model_version
        labels = (model_name, model_version)
        # Children are created once, so every series exists from the start (rates read 0, not "no data") and calls
        # on the request path do no label lookups.
        self._stage_seconds = {stage: STAGE_SECONDS.labels(*labels, stage) for stage in STAGES}
        self._request_seconds = {outcome: REQUEST_SECONDS.labels(*labels, outcome) for outcome in OUTCOMES}
        self._requests = {outcome: REQUESTS.labels(*labels, outcome) for outcome in OUTCOMES}
        self._errors = {reason: ERRORS.labels(*labels, reason) for reason in ERROR_REASONS}
        self._inflight = INFLIGHT.labels(*labels)
        self._images = IMAGES.labels(*labels)
        self._batch_size = BATCH_SIZE.labels(*labels)
        self._queue_wait = QUEUE_WAIT_SECONDS.labels(*labels)
        self._top1 = TOP1_SIMILARITY.labels(*labels)
        # Created on the first score, so the drift series is absent (not 0) until there is something to compare.
        self._drift_gauge: Gauge | None = None
        self._drift = _DriftTracker(DRIFT_HALF_LIFE_QUERIES, DRIFT_MIN_QUERIES)

    def stage(self, stage: str) -> _StageTimer:
        """Time the ``with`` block as one stage: decode, preprocess, embed or search."""
        try:
            return _StageTimer(self._stage_seconds[stage])
        except KeyError:
            _check(stage, STAGES, "stage")
            raise

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record a stage duration measured elsewhere, e.g. one forward pass shared by a batch."""
        try:
            histogram = self._stage_seconds[stage]
        except KeyError:
            _check(stage, STAGES, "stage")
            raise
        histogram.observe(seconds)

    def request(self) -> RequestTracker:
        """Track one request: ``with metrics.request() as tracker: ...; tracker.fail("bad_input")``."""
        return RequestTracker(self)

    def count_images(self, n: int) -> None:
        """Count images embedded."""
        if n < 0:
            raise ValueError(f"n must be 0 or more, got {n}")
        self._images.inc(n)

    def watch_search_backlog(self, waiting_queries: Callable[[], int]) -> None:
        """Export `waiting_queries()`, read at each scrape, as the model's search backlog."""
        SEARCH_WAITING.labels(self.model_name, self.model_version).set_function(waiting_queries)

    def observe_batch(self, size: int, queue_wait_seconds: list[float]) -> None:
        """Record one forward pass: its size and how long each of its images waited in the queue."""
        self._batch_size.observe(size)
        observe_wait = self._queue_wait.observe
        for seconds in queue_wait_seconds:
            observe_wait(seconds)

    def observe_top1(self, similarities: Sequence[float]) -> None:
        """Record the top-1 cosine similarity of each query."""
        observe = self._top1.observe
        for similarity in similarities:
            # Float rounding puts an exact match a hair above 1, which would land in the +Inf bucket.
            observe(min(float(similarity), 1.0))

    def observe_queries(self, embeddings: np.ndarray) -> None:
        """Feed L2-normalised query embeddings ``[n, d]`` into the drift score; ``n`` may be 0."""
        self._export_drift(self._drift.observe(embeddings))

    def set_reference_centroid(self, centroid: np.ndarray) -> None:
        """Set the centroid of the indexed vectors (the mean of a sample of them) that queries are compared with."""
        self._export_drift(self._drift.set_reference(centroid))

    def _export_drift(self, score: float | None) -> None:
        if score is None:
            return
        if self._drift_gauge is None:
            self._drift_gauge = DRIFT_SCORE.labels(self.model_name, self.model_version)
        self._drift_gauge.set(score)


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _NvmlUtilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class _Nvml:
    """The few NVML calls the GPU gauges need, made on the driver's own library so no Python binding is required."""

    def __init__(self, library: str = "libnvidia-ml.so.1") -> None:
        self._lib = ctypes.CDLL(library)
        self._call("nvmlInit_v2")

    def _call(self, function: str, *args: object) -> None:
        code = getattr(self._lib, function)(*args)
        if code != 0:
            raise RuntimeError(f"{function} returned NVML error {code}")

    def handle(self, selector: str) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        if selector.isdigit():
            self._call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(int(selector)), ctypes.byref(handle))
        else:
            self._call("nvmlDeviceGetHandleByUUID", ctypes.c_char_p(selector.encode()), ctypes.byref(handle))
        return handle

    def read(self, handle: ctypes.c_void_p) -> tuple[float | None, int, int]:
        memory = _NvmlMemory()
        self._call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(memory))
        utilization = _NvmlUtilization()
        try:
            self._call("nvmlDeviceGetUtilizationRates", handle, ctypes.byref(utilization))
        except RuntimeError:
            # MIG slices report memory but not utilisation.
            return None, memory.used, memory.total
        return utilization.gpu / 100.0, memory.used, memory.total


def _open_nvml() -> _Nvml:
    return _Nvml()


def _nvml_selector(device: str) -> str:
    """The NVML index or UUID of a torch CUDA device; NVML ignores CUDA_VISIBLE_DEVICES, torch numbers within it."""
    suffix = device.partition(":")[2]
    index = int(suffix) if suffix else 0
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    if index < len(visible):
        return visible[index]
    return str(index)


_GPU_GAUGES = (GPU_UTILIZATION, GPU_MEMORY_USED, GPU_MEMORY_TOTAL)
_gpu_lock = threading.Lock()
_gpu_devices: set[str] = set()
_gpu_stop = threading.Event()


def _read_gpu(nvml: _Nvml, handle: ctypes.c_void_p, device: str) -> bool:
    try:
        utilization, used, total = nvml.read(handle)
    except Exception:
        # A stale last value would look like a healthy GPU; an absent series shows as a gap and in absent().
        for gauge in _GPU_GAUGES:
            try:
                gauge.remove(device)
            except KeyError:
                pass
        return False
    if utilization is not None:
        GPU_UTILIZATION.labels(device).set(utilization)
    GPU_MEMORY_USED.labels(device).set(used)
    GPU_MEMORY_TOTAL.labels(device).set(total)
    return True


def _poll_gpu(nvml: _Nvml, handle: ctypes.c_void_p, device: str, interval_s: float) -> None:
    healthy = True
    while not _gpu_stop.wait(interval_s):
        readable = _read_gpu(nvml, handle, device)
        if readable != healthy:
            log.warning("GPU metrics for %s: NVML reads %s", device, "work again" if readable else "fail")
            healthy = readable


def start_gpu_metrics(device: str, interval_s: float = 5.0) -> None:
    """Export GPU utilisation and memory of a CUDA device from NVML every ``interval_s`` seconds, in a daemon thread.

    Does nothing on other devices, so the GPU series are absent rather than 0 on CPU, and only logs a warning when
    NVML cannot be loaded. A second call for the same device does nothing.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be greater than 0, got {interval_s}")
    if not device.startswith("cuda"):
        return
    with _gpu_lock:
        if device in _gpu_devices:
            return
        try:
            nvml = _open_nvml()
            handle = nvml.handle(_nvml_selector(device))
        except Exception as error:
            log.warning("GPU metrics are off for %s: NVML is not usable (%s)", device, error)
            return
        _gpu_devices.add(device)
        _read_gpu(nvml, handle, device)
        threading.Thread(
            target=_poll_gpu, args=(nvml, handle, device, interval_s), name=f"gpu-metrics-{device}", daemon=True
        ).start()
