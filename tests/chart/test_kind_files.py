"""What the kind run applies besides the chart: Milvus standalone validates, and the chart takes the kind values."""

import subprocess

import kubernetes_validate
import pytest
import yaml
from chart_helpers import CHART, REPO, of_kind, one

KIND = REPO / "hack" / "kind"


@pytest.mark.parametrize("doc", list(yaml.safe_load_all((KIND / "milvus.yaml").read_text())), ids=lambda d: d["kind"])
def test_milvus_standalone_objects_validate(doc):
    kubernetes_validate.validate(doc, "1.29.0", strict=True)


def test_milvus_is_where_the_chart_looks_for_it_by_default(render):
    service = next(d for d in yaml.safe_load_all((KIND / "milvus.yaml").read_text()) if d["kind"] == "Service")
    isvc = one(render("cpu"), "InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    uri = next(item["value"] for item in container["env"] if item["name"] == "IMAGE_SEARCH_MILVUS_URI")
    assert uri == f"http://{service['metadata']['name']}.search:{service['spec']['ports'][0]['port']}"


@pytest.fixture(scope="module")
def kind_release(helm):
    command = [helm, "template", "image-search", str(CHART), "--namespace", "image-search"]
    command += ["-f", str(CHART / "ci" / "cpu-values.yaml"), "-f", str(KIND / "values.yaml")]
    rendered = subprocess.run(command, capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def test_the_kind_values_index_the_seeded_catalogue(kind_release):
    (job,) = [j for j in of_kind(kind_release, "Job") if j["metadata"]["name"].startswith("image-search-index-")]
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["completions"] == 2
    source = next(v for v in pod["volumes"] if v["name"] == "source")
    assert source["persistentVolumeClaim"]["claimName"] == "image-search-data"
    assert "/data/source/catalogue/photos" in pod["containers"][0]["args"]


def test_the_gateways_proxies_may_reach_the_predictor(kind_release):
    policy = one(kind_release, "NetworkPolicy")
    allowed = {
        peer["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name")
        for rule in policy["spec"]["ingress"]
        for peer in rule.get("from", [])
        if "namespaceSelector" in peer
    }
    assert "envoy-gateway-system" in allowed, allowed
