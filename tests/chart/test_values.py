"""values.yaml is documented and matches a strict schema; values that cannot work are refused with a clear reason."""

import json
import re

import jsonschema
import pytest
import yaml
from chart_helpers import CHART, SCENARIOS

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/\"]+):(\s|$)")


def test_values_schema_is_strict_draft_07() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["additionalProperties"] is False


def test_every_structured_block_of_the_schema_is_closed() -> None:
    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or 'values'} accepts unknown keys"
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}".lstrip("."))

    walk(SCHEMA, "")


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_defaults_and_scenarios_match_the_schema(scenario: str | None) -> None:
    values = yaml.safe_load(VALUES_TEXT)
    if scenario:
        values = merge(values, yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text()))
    jsonschema.validate(values, SCHEMA, cls=jsonschema.Draft7Validator)


def merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def test_values_file_opens_with_the_schema_header() -> None:
    assert VALUES_TEXT.splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"


def test_every_key_of_values_yaml_has_a_comment_above_it() -> None:
    lines = VALUES_TEXT.splitlines()
    undocumented = []
    list_item_indent = None  # fields of Kubernetes objects in example lists are documented by the list's comment
    for number, line in enumerate(lines):
        indent = len(line) - len(line.lstrip(" "))
        if line.lstrip().startswith("- "):
            list_item_indent = indent
            continue
        if list_item_indent is not None and line.strip() and not line.lstrip().startswith("#"):
            if indent > list_item_indent:
                continue
            list_item_indent = None
        match = KEY_LINE.match(line)
        if not match:
            continue
        above = lines[number - 1].strip() if number else ""
        if not above.startswith("#"):
            undocumented.append(f"line {number + 1}: {line.strip()}")
    assert not undocumented, "keys without a comment above them:\n" + "\n".join(undocumented)


@pytest.mark.parametrize(
    "setting",
    ["replicas=3", "predictor.gpus=1", "canary.percent=10", "autoscaling.keda.threshold=3", "gpu.nvidia=true"],
)
def test_schema_rejects_an_unknown_key(render, setting: str) -> None:
    message = render.failure(None, setting)
    assert "additional properties" in message.lower() or "not allowed" in message.lower(), message


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (["deploymentMode=Serverless"], "deploymentMode"),
        (["canary.trafficPercent=120"], "trafficPercent"),
        (["autoscaling.scaleMetric=gpu"], "scaleMetric"),
        (["model.storageUri=ftp://models/1"], "storageUri"),
        (["milvus.tokenSecret=hunter2"], "tokenSecret"),
        (["predictor.maxRequestBytes=0"], "maxRequestBytes"),
        (["predictor.requestTimeoutSeconds=0"], "requestTimeoutSeconds"),
        (["predictor.searchWorkers=0"], "searchWorkers"),
        (["predictor.namespaceHeader=x tenant"], "namespaceHeader"),
        (["networkPolicy.egress.dns=null"], "dns"),
    ],
)
def test_schema_rejects_values_of_the_wrong_shape(render, settings: list[str], reason: str) -> None:
    assert reason in render.failure(None, *settings)


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (["autoscaling.minReplicas=0"], "cannot scale to zero"),
        (["autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"], "above autoscaling.maxReplicas"),
        (["deploymentMode=Knative", "autoscaling.scaleMetric=cpu"], "Knative scales on concurrency or rps"),
        (["autoscaling.scaleMetric=rps"], "needs Knative mode"),
        (["deploymentMode=Knative", "autoscaling.keda.enabled=true"], "Standard mode only"),
        (["canary.enabled=true"], "needs canary.storageUri"),
        (["canary.enabled=true", "canary.storageUri=s3://m/2"], "needs canary.version"),
        (["metrics.podMonitor.enabled=true", "metrics.serviceMonitor.enabled=true"], "scrapes every pod twice"),
        (["indexing.enabled=true"], "needs a source"),
        (["requestLogger.enabled=true"], "needs requestLogger.url"),
        (["indexing.enabled=true", "indexing.source.uri=s3://a", "indexing.source.pvc.claimName=b"], "choose one"),
        (["predictor.drain.preStopSeconds=20"], "exceed predictor.terminationGracePeriodSeconds (30)"),
        (["predictor.terminationGracePeriodSeconds=20"], "raise terminationGracePeriodSeconds or shorten the drain"),
        (
            ["deploymentMode=Knative", "autoscaling.minReplicas=0", "predictor.drain.shutdownGraceSeconds=90"],
            "exceeds predictor.timeoutSeconds (60)",
        ),
        (
            ["networkPolicy.sameNamespace=false", "networkPolicy.allowedNamespaces=null"],
            "networkPolicy admits no one",
        ),
        (["milvus.uri=https://in03.api.zillizcloud.com"], "not a Service of the cluster"),
    ],
)
def test_values_that_cannot_work_are_refused_with_what_to_change(render, settings: list[str], reason: str) -> None:
    assert reason in render.failure(None, *settings)
