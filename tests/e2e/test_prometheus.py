"""The dashboard and the alerts, proven against a real Prometheus scraping a real predictor.

One predictor (on a fresh milvus-lite file, so the other e2e tests' server is left alone) is scraped every second by
a Prometheus that loads the real rule file. Real clients send healthy traffic and a few bad requests, then a burst of
bad ones; every dashboard panel's every query must then return data from Prometheus, and the error-ratio alert must
have stayed quiet on the healthy traffic and gone pending after the burst.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from harness.predictor_server import REPO_ROOT, RunningServer, run_cli, run_predictor
from harness.prometheus_server import RunningPrometheus, prometheus_binary, run_prometheus

pytestmark = pytest.mark.skipif(
    prometheus_binary() is None, reason="prometheus is not installed: run hack/tools/prometheus.sh (or make tools)"
)

NAMESPACE = "image-search-e2e"
JOB = "image-search"
SEARCH = "image-search"
CLASSIFIER = "image-classifier"
RULES = REPO_ROOT / "monitoring" / "rules" / "image-search.rules.yaml"
DASHBOARD = REPO_ROOT / "monitoring" / "dashboards" / "image-search.json"
RENDERER = REPO_ROOT / "hack" / "render-dashboard.py"
DASHBOARD_PNG = REPO_ROOT / "docs" / "images" / "dashboard.png"
ERROR_RATIO_ALERT = "ImageSearchHighErrorRatio"
# Grafana derives $__rate_interval from the scrape interval and the graph's resolution; the recording rules' 5m window
# keeps all of this test's traffic in view, so an empty answer means a broken query, not a too-narrow window.
RATE_INTERVAL = "5m"
# Panels about search results: the classifier searches nothing, so they have nothing to show for it.
SEARCH_ONLY_SERIES = ("top1_similarity", "query_drift_score", "search_waiting_queries")
STAGES = {"decode", "preprocess", "embed", "search"}


@dataclass(frozen=True)
class Traffic:
    sent: Counter  # (model, outcome) -> requests
    images: Counter  # model -> images sent in successful requests
    model_version: str
    device: str
    alerts_after_healthy: list[dict]
    started_at: float


@pytest.fixture(scope="module")
def predictor(catalogue, tmp_path_factory) -> RunningServer:
    workdir = tmp_path_factory.mktemp("prometheus-predictor")
    # A milvus-lite file is locked by the process that opens it, so this server needs its own.
    uri = str(workdir / "milvus.db")
    result = run_cli("index", str(catalogue.directory), "--milvus-uri", uri, "--collection", "images")
    assert result.returncode == 0, result.stderr
    with run_predictor(uri, workdir) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(predictor, tmp_path_factory) -> RunningPrometheus:
    with run_prometheus(
        tmp_path_factory.mktemp("prometheus"),
        job=JOB,
        targets=[f"127.0.0.1:{predictor.http_port}"],
        target_labels={"namespace": NAMESPACE},
        rule_files=[RULES],
    ) as running:
        running.wait_for(
            "a first successful scrape of the predictor",
            lambda: running.query(f'up{{job="{JOB}", namespace="{NAMESPACE}"}} == 1'),
            timeout_s=30,
        )
        yield running


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _http(predictor: RunningServer, model: str, images: list[bytes], binary: bool = True) -> None:
    client = httpclient.InferenceServerClient(predictor.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    # JSON carries BYTES as text: the V2 JSON convention for images is base64.
    data = images if binary else [b64(image) for image in images]
    tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    client.infer(model, [tensor])
    client.close()


def _grpc(predictor: RunningServer, model: str, images: list[bytes]) -> None:
    client = grpcclient.InferenceServerClient(predictor.grpc_address)
    tensor = grpcclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    client.infer(model, [tensor])
    client.close()


def _v1(predictor: RunningServer, model: str, body: dict, status: int = 200) -> None:
    response = httpx.post(f"{predictor.http_url}/v1/models/{model}:predict", json=body, timeout=60)
    assert response.status_code == status, response.text


def _v2_json(predictor: RunningServer, model: str, data: list[str], status: int) -> None:
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(data)], "data": data}]}
    response = httpx.post(f"{predictor.http_url}/v2/models/{model}/infer", json=body, timeout=60)
    assert response.status_code == status, response.text


def _grpc_rejected(predictor: RunningServer, model: str, payload: bytes) -> None:
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
        _grpc(predictor, model, [payload])


def _totals(prometheus: RunningPrometheus) -> Counter:
    result = prometheus.query(f'sum by (model, outcome) (image_search_requests_total{{namespace="{NAMESPACE}"}})')
    return Counter({(s["metric"]["model"], s["metric"]["outcome"]): int(float(s["value"][1])) for s in result})


def _rfc3339(timestamp: str) -> float:
    # Prometheus writes nanoseconds, which datetime does not parse; microseconds are plenty here.
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", timestamp).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


def _wait_for_evaluation_after(prometheus: RunningPrometheus, moment: float) -> None:
    """Waits until every rule group has been evaluated twice since ``moment``: alerts read the recorded series of
    the previous evaluation of the recording group."""

    def evaluated() -> bool:
        groups = prometheus.rule_groups()
        return bool(groups) and all(_rfc3339(group["lastEvaluation"]) > moment + 2 for group in groups)

    prometheus.wait_for("the rule groups to evaluate the scraped traffic", evaluated, timeout_s=30)


def _error_ratio_alerts(prometheus: RunningPrometheus, model: str) -> list[dict]:
    return [
        alert
        for alert in prometheus.alerts()
        if alert["labels"].get("alertname") == ERROR_RATIO_ALERT
        and alert["labels"].get("namespace") == NAMESPACE
        and alert["labels"].get("model") == model
    ]


@pytest.fixture(scope="module")
def traffic(predictor, prometheus, catalogue) -> Traffic:
    started_at = time.time()
    photos = [path.read_bytes() for path in sorted(catalogue.photos.values())]
    sent: Counter = Counter()
    images: Counter = Counter()

    def photos_at(start: int, count: int) -> list[bytes]:
        return [photos[(start + offset) % len(photos)] for offset in range(count)]

    calls: list[Callable[[], None]] = []

    def plan(model: str, count: int, call: Callable[[], None]) -> None:
        calls.append(call)
        sent[(model, "success")] += 1
        images[model] += count

    # Healthy traffic through every protocol, enough search images (over 50) for the drift score to be exported.
    for i in range(8):
        batch = photos_at(4 * i, 4)
        plan(SEARCH, 4, lambda batch=batch: _http(predictor, SEARCH, batch))
    for i in range(4):
        batch = photos_at(2 * i + 1, 2)
        plan(SEARCH, 2, lambda batch=batch: _http(predictor, SEARCH, batch, binary=False))
    for i in range(8):
        batch = photos_at(2 * i + 3, 2)
        plan(SEARCH, 2, lambda batch=batch: _grpc(predictor, SEARCH, batch))
    for i in range(8):
        body = {"instances": [{"image": {"b64": b64(photos[i % len(photos)])}}], "parameters": {"top_k": 3}}
        plan(SEARCH, 1, lambda body=body: _v1(predictor, SEARCH, body))
    for i in range(4):
        body = {"instances": [{"image_base64": b64(photo)} for photo in photos_at(i, 2)]}
        plan(CLASSIFIER, 2, lambda body=body: _v1(predictor, CLASSIFIER, body))
    for i in range(4):
        batch = photos_at(i + 5, 1)
        plan(CLASSIFIER, 1, lambda batch=batch: _grpc(predictor, CLASSIFIER, batch))
    for i in range(2):
        batch = photos_at(i + 7, 2)
        plan(CLASSIFIER, 2, lambda batch=batch: _http(predictor, CLASSIFIER, batch))
    # One bad request among 29 is under the 5% the alert allows: it must stay quiet.
    calls.append(lambda: _v2_json(predictor, SEARCH, [b64(b"not a picture at all")], 400))
    sent[(SEARCH, "bad_input")] += 1

    # Concurrent clients, so that the micro-batcher coalesces requests into larger forward passes.
    with ThreadPoolExecutor(max_workers=6) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()

    prometheus.wait_for("every healthy request to be scraped", lambda: _totals(prometheus) == sent, timeout_s=30)
    _wait_for_evaluation_after(prometheus, time.time())
    alerts_after_healthy = prometheus.alerts()

    # The burst: bad input through every protocol, to both models.
    big_base64_garbage = b64(os.urandom(30_000))
    burst: list[Callable[[], None]] = []
    for i in range(10):
        burst.append(lambda i=i: _v2_json(predictor, SEARCH, [b64(f"garbage {i}".encode())], 400))
        burst.append(lambda: _v1(predictor, SEARCH, {"instances": [{"image": {"b64": "%%% not base64"}}]}, 400))
        burst.append(lambda: _grpc_rejected(predictor, SEARCH, b"\x89PNG\r\n\x1a\n but then nothing"))
    burst.append(lambda: _v2_json(predictor, SEARCH, [big_base64_garbage], 400))
    burst.append(lambda: _v1(predictor, CLASSIFIER, {"instances": [{"image_base64": "not base64 %%%"}]}, 400))
    sent[(SEARCH, "bad_input")] += 31
    sent[(CLASSIFIER, "bad_input")] += 1
    with ThreadPoolExecutor(max_workers=6) as pool:
        for future in [pool.submit(call) for call in burst]:
            future.result()
    prometheus.wait_for("every burst request to be scraped", lambda: _totals(prometheus) == sent, timeout_s=30)

    build_info = prometheus.query(f'image_search_build_info{{namespace="{NAMESPACE}", model="{SEARCH}"}}')
    assert len(build_info) == 1, build_info
    return Traffic(
        sent=sent,
        images=images,
        model_version=build_info[0]["metric"]["model_version"],
        device=build_info[0]["metric"]["device"],
        alerts_after_healthy=alerts_after_healthy,
        started_at=started_at,
    )


def test_every_request_is_counted_once_under_its_outcome(prometheus, traffic):
    # The traffic fixture already waited for equality; this states the claim and checks images too.
    assert _totals(prometheus) == traffic.sent
    result = prometheus.query(f'sum by (model) (image_search_images_processed_total{{namespace="{NAMESPACE}"}})')
    assert {s["metric"]["model"]: int(float(s["value"][1])) for s in result} == dict(traffic.images)


def test_error_ratio_alert_stays_quiet_on_mostly_healthy_traffic(traffic):
    quiet = [alert for alert in traffic.alerts_after_healthy if alert["labels"]["alertname"] == ERROR_RATIO_ALERT]
    assert quiet == []


def test_error_ratio_alert_goes_pending_after_a_burst_of_bad_requests(prometheus, traffic):
    alerts = prometheus.wait_for(
        f"{ERROR_RATIO_ALERT} to be pending or firing for {SEARCH}",
        lambda: [a for a in _error_ratio_alerts(prometheus, SEARCH) if a["state"] in ("pending", "firing")],
        timeout_s=30,
    )
    (alert,) = alerts
    assert alert["labels"]["model_version"] == traffic.model_version
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"].endswith("docs/runbooks/image-search-high-error-ratio.md")
    # The alert may have turned pending on the first part of the burst; once all of it is evaluated, the value it
    # reports is the share of this model's requests that failed.
    _wait_for_evaluation_after(prometheus, time.time())
    (alert,) = _error_ratio_alerts(prometheus, SEARCH)
    failed = traffic.sent[(SEARCH, "bad_input")]
    assert float(alert["value"]) == pytest.approx(failed / (failed + traffic.sent[(SEARCH, "success")]), rel=0.01)
    assert alert["state"] in ("pending", "firing")


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets(dashboard: dict) -> list[tuple[dict, dict]]:
    return [(panel, target) for panel in dashboard["panels"] if panel["type"] != "row" for target in panel["targets"]]


def substitute(expr: str, namespace: str, model: str, model_version: str) -> str:
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", namespace)
        .replace("$model_version", model_version)
        .replace("$model", model)
    )


def has_data(result: list[dict]) -> bool:
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


def is_gpu_expression(expr: str) -> bool:
    return "image_search_gpu_" in expr


def test_dashboard_variables_resolve_to_the_scraped_predictor(prometheus, traffic):
    variables = {variable["name"]: variable for variable in load_dashboard()["templating"]["list"]}
    pattern = re.compile(r"label_values\((?P<match>.+), (?P<label>\w+)\)$")
    chosen = {"namespace": NAMESPACE, "model": SEARCH}
    expected = {"namespace": [NAMESPACE], "model": [CLASSIFIER, SEARCH], "model_version": [traffic.model_version]}
    for name, want in expected.items():
        found = pattern.match(variables[name]["query"]["query"])
        assert found, variables[name]["query"]
        match = found["match"]
        for variable, value in chosen.items():
            match = match.replace(f"${variable}", value)
        assert sorted(prometheus.label_values(found["label"], match)) == want, name


@pytest.mark.parametrize("model", [SEARCH, CLASSIFIER])
def test_every_dashboard_query_returns_data(prometheus, traffic, model):
    empty = []
    for panel, target in dashboard_targets(load_dashboard()):
        expr = target["expr"]
        if is_gpu_expression(expr) and not traffic.device.startswith("cuda"):
            continue  # test_gpu_series_are_absent_on_cpu_and_present_on_cuda covers these
        if model == CLASSIFIER and any(series in expr for series in SEARCH_ONLY_SERIES):
            continue
        result = prometheus.query(substitute(expr, NAMESPACE, model, traffic.model_version))
        if not has_data(result):
            empty.append(f"{panel['title']} [{target['refId']}]: {expr}")
    assert empty == [], "panels without data:\n" + "\n".join(empty)


def _series(prometheus: RunningPrometheus, expr: str, label: str) -> set[str]:
    return {sample["metric"].get(label, "") for sample in prometheus.query(expr) if has_data([sample])}


def test_panels_break_down_by_every_stage_and_outcome(prometheus, traffic):
    """Data in a panel is not enough when it should show several lines: each stage and outcome must be there."""
    selector = f'namespace="{NAMESPACE}", model="{SEARCH}"'
    stages = _series(
        prometheus,
        "namespace_model_version_stage_quantile:image_search_stage_duration_seconds:rate5m"
        f'{{{selector}, quantile="0.99"}}',
        "stage",
    )
    assert stages == STAGES
    outcomes = _series(
        prometheus, f"namespace_model_version_outcome:image_search_requests:rate5m{{{selector}}}", "outcome"
    )
    assert {"success", "bad_input"} <= outcomes
    reasons = _series(
        prometheus, f"namespace_model_version_reason:image_search_errors:rate5m{{{selector}}} > 0", "reason"
    )
    assert reasons == {"bad_input"}
    quantiles = _series(
        prometheus,
        f"namespace_model_version_quantile:image_search_request_duration_seconds:rate5m{{{selector}}}",
        "quantile",
    )
    assert quantiles == {"0.5", "0.95", "0.99"}
    (drift,) = prometheus.query(f"namespace_model_version:image_search_query_drift_score:avg{{{selector}}}")
    # Queries are the catalogue's own photos: the drift score must say they look like the catalogue.
    assert 0 <= float(drift["value"][1]) < 0.25
    (median,) = prometheus.query(
        f'namespace_model_version_quantile:image_search_top1_similarity:rate30m{{{selector}, quantile="0.5"}}'
    )
    assert float(median["value"][1]) > 0.9


def test_gpu_series_are_absent_on_cpu_and_present_on_cuda(prometheus, traffic):
    gpu_exprs = [
        target["expr"] for _, target in dashboard_targets(load_dashboard()) if is_gpu_expression(target["expr"])
    ]
    assert len(gpu_exprs) >= 3
    raw = prometheus.query(f'{{__name__=~"image_search_gpu_.+", namespace="{NAMESPACE}"}}')
    results = [prometheus.query(substitute(expr, NAMESPACE, SEARCH, traffic.model_version)) for expr in gpu_exprs]
    if traffic.device.startswith("cuda"):
        assert {sample["metric"]["__name__"] for sample in raw} >= {
            "image_search_gpu_memory_used_bytes",
            "image_search_gpu_memory_total_bytes",
        }
        assert all(has_data(result) for result in results)
    else:
        # Absent, not 0: a CPU pod must not look like an idle GPU.
        assert raw == []
        assert results == [[] for _ in gpu_exprs]


def test_predictor_log_holds_no_image_payloads(predictor, traffic):
    log = predictor.log()
    assert re.search(r"[A-Za-z0-9+/]{100,}", log) is None


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_dashboard", RENDERER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_renders_from_the_same_queries(prometheus, traffic, tmp_path):
    """The rendering in docs/operate.md is made here; RENDER_DASHBOARD=1 writes it into docs/images."""
    pytest.importorskip("matplotlib")
    renderer = _load_renderer()
    out = tmp_path / "dashboard.png"
    panels = renderer.render(
        renderer.PrometheusSource(prometheus.url),
        load_dashboard(),
        out,
        variables={"namespace": NAMESPACE, "model": SEARCH, "model_version": traffic.model_version},
        start=traffic.started_at - 30,
        end=time.time(),
        rate_interval="1m",
    )
    assert out.stat().st_size > 50_000
    assert panels == len([panel for panel in load_dashboard()["panels"] if panel["type"] != "row"])
    if os.environ.get("RENDER_DASHBOARD") == "1":
        DASHBOARD_PNG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, DASHBOARD_PNG)
