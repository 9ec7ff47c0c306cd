"""What the kind tests do without a cluster: readiness rules, waits that end at their deadline, port-forwards that
fail with kubectl's own words, the manifests they apply."""

import socket
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.kind import manifests
from tests.kind.cluster import (
    ClusterUnavailable,
    PortForwardError,
    api_client,
    current_context,
    forwarded_port,
    inference_service_ready,
    port_forward,
    tool,
    wait_for_deployment,
    wait_for_inference_service,
    wait_until,
)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable_cluster(tmp_path, monkeypatch) -> str:
    """A kubeconfig whose only context points at a port nothing listens on."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{closed_port()}"}}],
        "users": [{"name": "someone", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "kind-gone", "context": {"cluster": "gone", "user": "someone"}}],
        "current-context": "kind-gone",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return "kind-gone"


def condition(kind: str, status: str, reason: str | None = None) -> dict:
    return {"type": kind, "status": status, **({"reason": reason, "message": "waiting"} if reason else {})}


def test_an_inference_service_is_ready_only_when_kserve_says_so():
    assert inference_service_ready({"status": {"conditions": [condition("Ready", "True")]}}) == (True, "Ready")
    ready, why = inference_service_ready(
        {
            "status": {
                "conditions": [
                    condition("PredictorReady", "False", "MinimumReplicasUnavailable"),
                    condition("Ready", "False"),
                ]
            }
        }
    )
    assert not ready and "PredictorReady=False (MinimumReplicasUnavailable: waiting)" in why
    assert inference_service_ready({"metadata": {}}) == (False, "no conditions reported yet")


def test_a_wait_returns_as_soon_as_its_condition_holds():
    answers = iter([(False, "one"), (False, "two"), (True, "done")])
    assert wait_until(lambda: next(answers), 10, "the third answer", interval_s=0.01) == "done"


def test_a_wait_ends_at_its_deadline_and_says_what_it_last_saw():
    def failing() -> tuple[bool, str]:
        raise ConnectionError("refused")

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"the thing did not happen within 0s; last: ConnectionError: refused"):
        wait_until(failing, 0.3, "the thing", interval_s=0.05)
    assert time.monotonic() - started < 2


def test_waiting_for_an_inference_service_on_an_unreachable_cluster_times_out(unreachable_cluster):
    api = api_client(current_context())
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"InferenceService search/image-search Ready did not happen within 3s"):
        wait_for_inference_service(api, "image-search", "search", timeout_s=3)
    assert time.monotonic() - started < 60


def test_waiting_for_a_deployment_on_an_unreachable_cluster_times_out(unreachable_cluster):
    api = api_client(current_context())
    with pytest.raises(TimeoutError, match=r"Deployment search/image-search-predictor available did not happen"):
        wait_for_deployment(api, "image-search-predictor", "search", timeout_s=2)


def test_the_current_context_is_read_from_the_kubeconfig(unreachable_cluster):
    assert current_context() == unreachable_cluster


def test_no_kubeconfig_is_a_reason_to_skip_that_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ClusterUnavailable, match="make kind-up"):
        current_context()


@pytest.mark.parametrize(
    ("line", "ports"),
    [
        ("Forwarding from 127.0.0.1:41231 -> 8080\n", (41231, 8080)),
        ("Forwarding from [::1]:41231 -> 8080", None),
        ("Handling connection for 41231", None),
    ],
)
def test_forwarded_ports_are_read_from_kubectls_output(line, ports):
    assert forwarded_port(line) == ports


def test_a_port_forward_to_an_unreachable_cluster_fails_with_kubectls_words(unreachable_cluster):
    try:
        tool("kubectl")
    except ClusterUnavailable as missing:
        pytest.skip(str(missing))
    started = time.monotonic()
    with pytest.raises(PortForwardError, match=r"kubectl port-forward to service/x exited with 1: .*(refused|connect)"):
        with port_forward("service/x", "search", 8080, timeout_s=30):
            pass
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    "manifest",
    [
        manifests.data_claim(),
        manifests.seed_job("image-search:0.1.0"),
        manifests.index_job("image-search:0.1.0", "2", "http://milvus:19530"),
    ],
    ids=["claim", "seed", "index"],
)
def test_the_kind_manifests_are_valid_kubernetes_objects(manifest):
    kubernetes_validate.validate(manifest, "1.29.0", strict=True)


@pytest.mark.parametrize("job", [manifests.seed_job("i:1"), manifests.index_job("i:1", "2", "http://m:19530")])
def test_the_kind_jobs_meet_the_restricted_pod_security_profile(job):
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert (
        pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert security["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data", "/tmp", "/cache"}


def test_the_index_job_reads_the_package_the_canary_serves():
    (container,) = manifests.index_job("i:1", "2", "http://milvus:19530")["spec"]["template"]["spec"]["containers"]
    assert "--model-dir=/data/models/2" in container["command"]
    assert manifests.storage_uri("2") == "pvc://image-search-data/models/2"
    assert next(m for m in container["volumeMounts"] if m["mountPath"] == "/data")["readOnly"] is True


def test_the_manifests_command_prints_what_kubectl_applies(capsys):
    assert manifests.main(["seed", "--image", "image-search:0.1.0"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == manifests.seed_job("image-search:0.1.0")


def test_the_kind_values_and_gateway_files_parse():
    hack = Path(__file__).resolve().parents[2] / "hack" / "kind"
    for path in hack.glob("*.yaml"):
        assert list(yaml.safe_load_all(path.read_text())), path
