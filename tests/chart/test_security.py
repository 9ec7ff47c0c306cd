"""Every pod of every scenario meets the restricted Pod Security profile and runs without an API token."""

import pytest
from chart_helpers import SCENARIOS, containers, env, of_kind, one, pod_specs, server_container


def all_pods(docs: list[dict]) -> list[tuple[str, dict]]:
    return [pod for doc in docs for pod in pod_specs(doc)]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_meets_the_restricted_profile(render, scenario: str) -> None:
    pods = all_pods(render(scenario))
    assert pods
    for name, pod in pods:
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys(), name
        assert all("hostPath" not in volume for volume in pod.get("volumes", [])), name
        for container in containers(pod):
            context = container["securityContext"]
            where = f"{name} container {container['name']}"
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["runAsNonRoot"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert not context.get("privileged"), where


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_read_only_pods_get_writable_emptydirs_for_tmp_and_caches(render, scenario: str) -> None:
    for name, pod in all_pods(render(scenario)):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"] and "emptyDir" in volumes["cache"], name
        for container in containers(pod):
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert mounts.get("/tmp") == "tmp" and mounts.get("/cache") == "cache", f"{name} {container['name']}"
            variables = env(container)
            for variable in ("HOME", "XDG_CACHE_HOME", "TORCH_HOME"):
                assert variables[variable]["value"].startswith("/cache"), f"{name} {container['name']} {variable}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_run_as_the_chart_service_account_without_a_token(render, scenario: str) -> None:
    docs = render(scenario)
    account = one(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for name, pod in all_pods(docs):
        assert pod["serviceAccountName"] == account["metadata"]["name"], name
        assert pod["automountServiceAccountToken"] is False, name


def test_milvus_token_is_a_secret_reference_never_a_value(render) -> None:
    isvc = one(render("gpu"), "InferenceService")
    token = env(server_container(isvc["spec"]["predictor"]))["MILVUS_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"] == {"name": "milvus-token", "key": "token"}


def test_no_milvus_token_is_sent_when_no_secret_is_named(render) -> None:
    isvc = one(render("cpu"), "InferenceService")
    assert "MILVUS_TOKEN" not in env(server_container(isvc["spec"]["predictor"]))


@pytest.mark.parametrize("scenario", ["cpu", "knative"])
def test_network_policy_admits_only_serving_ports_to_predictor_pods(render, scenario: str) -> None:
    docs = render(scenario)
    policy = one(docs, "NetworkPolicy")
    isvc = one(docs, "InferenceService")
    pod_labels = isvc["spec"]["predictor"]["labels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = policy["spec"]["ingress"]
    ports = {port["port"] for port in rule["ports"]}
    if scenario == "knative":
        assert ports == {8080, 8012, 8022, 9090, 9091}, "Knative's queue-proxy ports must be reachable"
    else:
        assert ports == {8080, 8081}


def test_network_policy_can_be_switched_off(render) -> None:
    assert not of_kind(render("cpu", "networkPolicy.enabled=false"), "NetworkPolicy")
