"""The metrics API, read back the way Prometheus reads it: a scrape of the default registry."""

import asyncio
import shutil
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from predictor.observability import metrics

DIMENSION = 64


def scrape(registry: CollectorRegistry = REGISTRY) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names_with_prefix(samples: dict, prefix: str) -> set[str]:
    return {name for name, _ in samples if name.startswith(prefix)}


@pytest.fixture
def model() -> dict[str, str]:
    # The default registry lives as long as the test process: a fresh model name keeps tests apart.
    return {"model": f"test-{uuid.uuid4().hex[:8]}", "model_version": "v1"}


@pytest.fixture
def serving(model: dict[str, str]) -> metrics.ServingMetrics:
    return metrics.ServingMetrics(model["model"], model["model_version"])


def test_every_series_exists_at_zero_before_the_first_request(serving, model):
    samples = scrape()
    for outcome in metrics.OUTCOMES:
        assert value(samples, "image_search_requests_total", **model, outcome=outcome) == 0
        assert value(samples, "image_search_request_duration_seconds_count", **model, outcome=outcome) == 0
    for reason in metrics.ERROR_REASONS:
        assert value(samples, "image_search_errors_total", **model, reason=reason) == 0
    for stage in metrics.STAGES:
        assert value(samples, "image_search_stage_duration_seconds_count", **model, stage=stage) == 0
    assert value(samples, "image_search_requests_in_flight", **model) == 0
    assert value(samples, "image_search_images_processed_total", **model) == 0


def test_a_request_is_in_flight_inside_the_block_and_counted_as_success_after(serving, model):
    with serving.request() as tracker:
        assert value(scrape(), "image_search_requests_in_flight", **model) == 1
        assert tracker.outcome == "success"
    samples = scrape()
    assert value(samples, "image_search_requests_in_flight", **model) == 0
    assert value(samples, "image_search_requests_total", **model, outcome="success") == 1
    assert value(samples, "image_search_request_duration_seconds_count", **model, outcome="success") == 1
    assert value(samples, "image_search_request_duration_seconds_sum", **model, outcome="success") > 0


def test_a_failed_request_counts_under_its_first_reason_and_as_one_error(serving, model):
    with serving.request() as tracker:
        tracker.fail("bad_input")
        tracker.fail("internal")
    samples = scrape()
    assert value(samples, "image_search_requests_total", **model, outcome="bad_input") == 1
    assert value(samples, "image_search_requests_total", **model, outcome="success") == 0
    assert value(samples, "image_search_errors_total", **model, reason="bad_input") == 1
    assert value(samples, "image_search_errors_total", **model, reason="internal") == 0


@pytest.mark.parametrize(("error", "outcome"), [(TimeoutError, "timeout"), (RuntimeError, "internal")])
def test_an_exception_leaving_the_block_marks_the_outcome_and_propagates(serving, model, error, outcome):
    with pytest.raises(error):
        with serving.request():
            raise error("boom")
    samples = scrape()
    assert value(samples, "image_search_requests_total", **model, outcome=outcome) == 1
    assert value(samples, "image_search_errors_total", **model, reason=outcome) == 1
    assert value(samples, "image_search_requests_in_flight", **model) == 0


def test_stages_are_timed_by_context_and_by_value(serving, model):
    with serving.stage("decode"):
        time.sleep(0.002)
    serving.observe_stage("embed", 0.25)
    samples = scrape()
    assert value(samples, "image_search_stage_duration_seconds_count", **model, stage="decode") == 1
    assert value(samples, "image_search_stage_duration_seconds_sum", **model, stage="decode") >= 0.002
    assert value(samples, "image_search_stage_duration_seconds_sum", **model, stage="embed") == 0.25
    assert value(samples, "image_search_stage_duration_seconds_bucket", **model, stage="embed", le="0.25") == 1
    assert value(samples, "image_search_stage_duration_seconds_bucket", **model, stage="embed", le="0.1") == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.stage("resize"),
        lambda s: s.observe_stage("resize", 1.0),
        lambda s: s.request().fail("oops"),
        lambda s: s.count_images(-1),
    ],
)
def test_unknown_label_values_are_refused_with_the_allowed_ones(serving, call):
    with pytest.raises(ValueError):
        call(serving)


def test_unknown_stage_message_lists_the_stages(serving):
    with pytest.raises(ValueError, match="decode, preprocess, embed, search"):
        serving.stage("resize")


def test_batches_images_and_top1_similarities_are_recorded(serving, model):
    serving.observe_batch(3, [0.001, 0.002, 0.003])
    serving.observe_batch(1, [0.0])
    serving.count_images(4)
    serving.observe_top1(np.array([0.95, 0.35], dtype=np.float32))
    samples = scrape()
    assert value(samples, "image_search_batch_size_images_count", **model) == 2
    assert value(samples, "image_search_batch_size_images_sum", **model) == 4
    assert value(samples, "image_search_batch_size_images_bucket", **model, le="1.0") == 1
    assert value(samples, "image_search_queue_wait_seconds_count", **model) == 4
    assert value(samples, "image_search_queue_wait_seconds_sum", **model) == pytest.approx(0.006)
    assert value(samples, "image_search_images_processed_total", **model) == 4
    assert value(samples, "image_search_top1_similarity_count", **model) == 2
    assert value(samples, "image_search_top1_similarity_bucket", **model, le="0.4") == 1
    assert value(samples, "image_search_top1_similarity_bucket", **model, le="0.95") == 2


def test_an_exact_match_rounded_above_one_counts_as_similarity_one(serving, model):
    serving.observe_top1(np.array([1.0000001], dtype=np.float32))
    samples = scrape()
    assert value(samples, "image_search_top1_similarity_bucket", **model, le="1.0") == 1
    assert value(samples, "image_search_top1_similarity_sum", **model) == 1.0


def test_build_info_and_index_rows(model):
    metrics.set_build_info("1.2.3", model["model"], model["model_version"], "cpu", "bf16")
    metrics.set_index_rows(f"{model['model']}_collection", 1234)
    samples = scrape()
    build = {"version": "1.2.3", "model": model["model"], "model_version": "v1", "device": "cpu", "precision": "bf16"}
    assert value(samples, "image_search_build_info", **build) == 1
    assert value(samples, "image_search_index_rows", collection=f"{model['model']}_collection") == 1234


def test_concurrent_requests_from_threads_are_all_counted(serving, model):
    threads_count, per_thread = 8, 500

    def work() -> None:
        for i in range(per_thread):
            with serving.request() as tracker, serving.stage("search"):
                if i % 5 == 0:
                    tracker.fail("bad_input")

    threads = [threading.Thread(target=work) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = scrape()
    total = threads_count * per_thread
    assert value(samples, "image_search_requests_total", **model, outcome="bad_input") == total // 5
    assert value(samples, "image_search_requests_total", **model, outcome="success") == total - total // 5
    assert value(samples, "image_search_stage_duration_seconds_count", **model, stage="search") == total
    assert value(samples, "image_search_requests_in_flight", **model) == 0


def test_tracking_a_request_costs_microseconds(serving):
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        with serving.request(), serving.stage("embed"):
            pass
    # A generous bound: this is a guard against an accidental scrape or allocation per call, not a benchmark.
    assert (time.perf_counter() - start) / rounds < 200e-6


def our_metrics() -> CollectorRegistry:
    """Only this service's families, so the lint below judges our names and not those of libraries."""
    view = CollectorRegistry(auto_describe=True)
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            view.register(obj)
    return view


def test_the_exposition_passes_promtool_check_metrics(serving, model, fake_nvml):
    with serving.request():
        serving.observe_stage("decode", 0.01)
    serving.observe_batch(2, [0.01, 0.02])
    serving.observe_top1([0.9])
    serving.set_reference_centroid(np.ones(DIMENSION))
    serving.observe_queries(unit_rows(np.ones((metrics.DRIFT_MIN_QUERIES, DIMENSION))))
    metrics.set_build_info("1.2.3", model["model"], "v1", "cuda:0", "fp16")
    metrics.set_index_rows("c", 1)
    metrics.start_gpu_metrics("cuda:5", interval_s=3600)
    text = generate_latest(our_metrics())
    assert b"image_search_gpu_memory_total_bytes" in text
    assert b"image_search_query_drift_score" in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run hack/tools/prometheus.sh"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert not result.stdout.strip() and not result.stderr.strip(), result.stdout.decode() + result.stderr.decode()


# GPU gauges


class FakeNvml:
    def __init__(self) -> None:
        self.broken = False
        self.selectors: list[str] = []

    def handle(self, selector: str) -> str:
        self.selectors.append(selector)
        return selector

    def read(self, handle: str) -> tuple[float | None, int, int]:
        if self.broken:
            raise RuntimeError("GPU is lost")
        return 0.42, 3 * 2**30, 16 * 2**30


@pytest.fixture
def no_gpu_series():
    gauges = (metrics.GPU_UTILIZATION, metrics.GPU_MEMORY_USED, metrics.GPU_MEMORY_TOTAL)
    for gauge in gauges:
        gauge.clear()
    yield
    for gauge in gauges:
        gauge.clear()


@pytest.fixture
def fake_nvml(monkeypatch, no_gpu_series) -> FakeNvml:
    nvml = FakeNvml()
    monkeypatch.setattr(metrics, "_open_nvml", lambda: nvml)
    monkeypatch.setattr(metrics, "_gpu_devices", set())
    return nvml


def gpu_samples() -> set[str]:
    return names_with_prefix(scrape(), "image_search_gpu_")


def test_gpu_gauges_are_absent_on_cpu(monkeypatch, no_gpu_series):
    opened = []
    monkeypatch.setattr(metrics, "_open_nvml", lambda: opened.append(True))
    metrics.start_gpu_metrics("cpu")
    assert opened == []
    assert gpu_samples() == set()


def test_gpu_gauges_stay_absent_without_nvml(monkeypatch, caplog, no_gpu_series):
    def no_library() -> None:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(metrics, "_open_nvml", no_library)
    monkeypatch.setattr(metrics, "_gpu_devices", set())
    metrics.start_gpu_metrics("cuda:3")
    assert gpu_samples() == set()
    assert "NVML is not usable" in caplog.text


def test_gpu_gauges_come_from_nvml_and_vanish_when_reads_fail(fake_nvml):
    metrics.start_gpu_metrics("cuda:1", interval_s=3600)
    samples = scrape()
    assert value(samples, "image_search_gpu_utilization_ratio", device="cuda:1") == 0.42
    assert value(samples, "image_search_gpu_memory_used_bytes", device="cuda:1") == 3 * 2**30
    assert value(samples, "image_search_gpu_memory_total_bytes", device="cuda:1") == 16 * 2**30
    fake_nvml.broken = True
    assert metrics._read_gpu(fake_nvml, "1", "cuda:1") is False
    samples = scrape()
    assert value(samples, "image_search_gpu_memory_used_bytes", device="cuda:1") is None
    assert value(samples, "image_search_gpu_utilization_ratio", device="cuda:1") is None


def test_gpu_metrics_start_once_per_device(fake_nvml):
    metrics.start_gpu_metrics("cuda:2", interval_s=3600)
    metrics.start_gpu_metrics("cuda:2", interval_s=3600)
    assert fake_nvml.selectors == ["2"]


def test_nvml_device_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-8a1b")
    assert metrics._nvml_selector("cuda") == "3"
    assert metrics._nvml_selector("cuda:1") == "GPU-8a1b"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert metrics._nvml_selector("cuda:1") == "1"


def test_gpu_polling_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval_s"):
        metrics.start_gpu_metrics("cuda:0", interval_s=0)


# Drift score


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cluster(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float = 0.6) -> np.ndarray:
    return unit_rows(centre + spread * rng.standard_normal((n, centre.shape[0])))


def drift(model: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value("image_search_query_drift_score", model)


@pytest.fixture
def catalogue() -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    indexed_centre, other_centre = rng.standard_normal((2, DIMENSION))
    indexed = cluster(rng, indexed_centre, 2000)
    return rng, indexed, other_centre


def test_drift_stays_low_when_queries_look_like_the_catalogue(serving, model, catalogue):
    rng, indexed, _ = catalogue
    serving.set_reference_centroid(indexed[:500].mean(axis=0))
    for _ in range(100):
        serving.observe_queries(indexed[rng.integers(0, len(indexed), 16)])
    assert drift(model) < 0.02


def test_drift_rises_as_queries_move_away_from_the_catalogue(serving, model, catalogue):
    rng, indexed, other_centre = catalogue
    serving.set_reference_centroid(indexed[:500].mean(axis=0))
    for _ in range(100):
        serving.observe_queries(indexed[rng.integers(0, len(indexed), 16)])
    scores = [drift(model)]
    for _ in range(6):
        for _ in range(30):
            serving.observe_queries(cluster(rng, other_centre, 16))
        scores.append(drift(model))
    assert scores == sorted(scores)
    # Past the alert threshold of the rules file once most of the recent queries are of the other kind.
    assert scores[-1] > 0.25
    assert scores[0] < 0.02


def test_drift_is_absent_until_there_is_a_reference_and_enough_queries(serving, model, catalogue):
    rng, indexed, _ = catalogue
    serving.observe_queries(indexed[: metrics.DRIFT_MIN_QUERIES])
    assert drift(model) is None
    serving.set_reference_centroid(indexed.mean(axis=0))
    assert drift(model) is not None

    fresh = metrics.ServingMetrics(model["model"], "v2")
    fresh.set_reference_centroid(indexed.mean(axis=0))
    fresh.observe_queries(indexed[: metrics.DRIFT_MIN_QUERIES - 1])
    assert drift({**model, "model_version": "v2"}) is None


def test_drift_refuses_inputs_it_cannot_compare(serving, catalogue):
    _, indexed, _ = catalogue
    serving.set_reference_centroid(indexed.mean(axis=0))
    with pytest.raises(ValueError, match="dimension"):
        serving.observe_queries(np.ones((4, DIMENSION + 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        serving.observe_queries(np.ones(DIMENSION, dtype=np.float32))
    serving.observe_queries(np.empty((0, DIMENSION), dtype=np.float32))
    with pytest.raises(ValueError, match="non-zero"):
        serving.set_reference_centroid(np.zeros(DIMENSION))


def test_model_labels_must_not_be_empty():
    with pytest.raises(ValueError, match="model_version"):
        metrics.ServingMetrics("image-search", "")


def test_a_request_its_client_gave_up_on_counts_as_cancelled_and_not_as_an_error(serving, model):
    with pytest.raises(asyncio.CancelledError), serving.request():
        raise asyncio.CancelledError
    samples = scrape()
    assert value(samples, "image_search_requests_total", **model, outcome="cancelled") == 1
    assert value(samples, "image_search_requests_total", **model, outcome="internal") == 0
    for reason in metrics.ERROR_REASONS:
        assert value(samples, "image_search_errors_total", **model, reason=reason) == 0
    assert metrics.CANCELLED not in metrics.ERROR_REASONS


def test_a_cause_recorded_before_the_client_went_away_stays_the_outcome(serving, model):
    with pytest.raises(asyncio.CancelledError), serving.request() as tracker:
        tracker.fail("milvus_unavailable")
        raise asyncio.CancelledError
    samples = scrape()
    assert value(samples, "image_search_requests_total", **model, outcome="milvus_unavailable") == 1
    assert value(samples, "image_search_requests_total", **model, outcome="cancelled") == 0


def test_the_search_backlog_is_read_at_each_scrape(serving, model):
    waiting = [3]
    serving.watch_search_backlog(lambda: waiting[0])
    assert value(scrape(), "image_search_search_waiting_queries", **model) == 3
    waiting[0] = 0
    assert value(scrape(), "image_search_search_waiting_queries", **model) == 0
