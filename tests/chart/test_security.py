"""Every pod of every scenario meets the restricted Pod Security profile and runs without an API token."""

import pytest
from chart_helpers import SCENARIOS, containers, env, of_kind, one, pod_specs, predictors, server_container


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
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = policy["spec"]["ingress"]
    ports = {port["port"] for port in rule["ports"]}
    if scenario == "knative":
        assert ports == {8080, 8012, 8022, 9090, 9091}, "Knative's queue-proxy ports must be reachable"
    else:
        assert ports == {8080, 8081}


def test_network_policy_can_be_switched_off(render) -> None:
    assert not of_kind(render("cpu", "networkPolicy.enabled=false"), "NetworkPolicy")


def network_policy(docs: list[dict]) -> dict:
    return one(docs, "NetworkPolicy")["spec"]


def egress_by_port(policy: dict) -> dict[int, list[dict]]:
    rules: dict[int, list[dict]] = {}
    for rule in policy["egress"]:
        assert rule.get("to"), f"an egress rule without peers admits every destination: {rule}"
        for port in rule["ports"]:
            rules.setdefault(port["port"], []).extend(rule["to"])
    return rules


def namespace_peer(name: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


MILVUS_PODS = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "milvus"}}}
KUBE_DNS = {**namespace_peer("kube-system"), "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_network_policy_lets_predictors_reach_only_dns_milvus_and_their_model_store(render, scenario: str) -> None:
    docs = render(scenario)
    policy = network_policy(docs)
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    isvc = one(docs, "InferenceService")
    # KServe's storage initializer downloads the package named by STORAGE_URI; a pvc:// one is mounted instead.
    storage = [env(server_container(p)).get("STORAGE_URI", {}).get("value", "") for _, p in predictors(isvc)]
    downloads = any(uri and not uri.startswith("pvc://") for uri in storage)
    rules = egress_by_port(policy)
    assert set(rules) == ({53, 19530, 443} if downloads else {53, 19530}), scenario
    assert rules[53] == [KUBE_DNS, KUBE_DNS]  # UDP and TCP
    assert all(peer.get("podSelector") == MILVUS_PODS["podSelector"] for peer in rules[19530])


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("", {**namespace_peer("search"), **MILVUS_PODS}),
        ("http://milvus.vectors:19530", {**namespace_peer("vectors"), **MILVUS_PODS}),
        ("http://milvus-proxy.vectors.svc.cluster.local:19530", {**namespace_peer("vectors"), **MILVUS_PODS}),
        ("http://milvus:19530", MILVUS_PODS),
        ("http://10.20.30.40:19531", {"ipBlock": {"cidr": "10.20.30.40/32"}}),
    ],
)
def test_milvus_egress_follows_the_milvus_uri(render, uri: str, expected: dict) -> None:
    rules = egress_by_port(network_policy(render("cpu", f"milvus.uri={uri}")))
    port = int(uri.rsplit(":", 1)[1]) if uri.count(":") == 2 else 19530
    assert rules[port] == [expected]


def test_milvus_egress_peers_can_be_given(render) -> None:
    peers = "networkPolicy.egress.milvus[0].ipBlock.cidr=192.0.2.0/24"
    rules = egress_by_port(network_policy(render("cpu", "milvus.uri=https://milvus.example.com", peers)))
    assert rules[443] == [{"ipBlock": {"cidr": "192.0.2.0/24"}}]


def test_a_pvc_model_package_needs_no_model_store_egress(render) -> None:
    rules = egress_by_port(network_policy(render("cpu", "model.storageUri=pvc://models/lite0")))
    assert 443 not in rules


def test_network_policy_admits_exactly_the_peers_in_values(render) -> None:
    gateway = "networkPolicy.extraFrom[0].podSelector.matchLabels.app=gateway"
    docs = render("cpu", "networkPolicy.sameNamespace=false", "networkPolicy.allowedNamespaces={ingress}", gateway)
    (rule,) = network_policy(docs)["ingress"]
    assert rule["from"] == [namespace_peer("ingress"), {"podSelector": {"matchLabels": {"app": "gateway"}}}]


def test_egress_restriction_can_be_switched_off(render) -> None:
    policy = network_policy(render("cpu", "networkPolicy.egress.enabled=false"))
    assert policy["policyTypes"] == ["Ingress"] and "egress" not in policy
