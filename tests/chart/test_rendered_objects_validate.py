"""Every object of every scenario matches its schema: KServe and Prometheus Operator CRDs, built-in kinds."""

from pathlib import Path

import kubernetes_validate
import pytest
from chart_helpers import SCENARIOS, crd_validator, of_kind

# Custom resources the chart renders, and the vendored CRD that defines each.
CRDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "kserve/serving.kserve.io_inferenceservices.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "prometheus-operator/monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-operator/monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml",
}
BUILTIN_KINDS = {"ServiceAccount", "NetworkPolicy", "Job", "CronJob", "Pod", "Service", "ConfigMap"}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the one helm 4.1 is built against.
KUBERNETES_VERSIONS = ["1.29.0", "1.35.0"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_renders_only_kinds_that_are_validated(render, scenario: str) -> None:
    kinds = {doc["kind"] for doc in render(scenario)}
    unchecked = kinds - BUILTIN_KINDS - {kind for _, kind in CRDS}
    assert not unchecked, f"{scenario} renders kinds no test validates: {unchecked}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_custom_resources_match_their_crd_schema(render, schemas: Path, scenario: str) -> None:
    checked = 0
    for doc in render(scenario):
        key = (doc["apiVersion"], doc["kind"])
        if key not in CRDS:
            continue
        validator = crd_validator(schemas / CRDS[key], doc["apiVersion"].split("/")[1])
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{doc['kind']} {doc['metadata']['name']}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]
        )
        checked += 1
    assert checked >= 1, "every scenario renders at least the InferenceService"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_builtin_objects_are_valid_kubernetes(render, scenario: str, version: str) -> None:
    builtins = [doc for doc in render(scenario) if doc["kind"] in BUILTIN_KINDS]
    assert builtins
    for doc in builtins:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} is not valid Kubernetes {version}: {error.message}")


def test_crd_check_rejects_a_misspelt_field(render, schemas: Path) -> None:
    isvc = of_kind(render("cpu"), "InferenceService")[0]
    broken = {**isvc, "spec": {**isvc["spec"], "predictor": {**isvc["spec"]["predictor"], "minReplica": 1}}}
    validator = crd_validator(schemas / CRDS[("serving.kserve.io/v1beta1", "InferenceService")], "v1beta1")
    assert list(validator.iter_errors(broken))
