"""Small readers of rendered objects: find them by kind, walk their pod specs, read container arguments."""

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "image-search"
SCENARIOS = sorted(path.name.removesuffix("-values.yaml") for path in (CHART / "ci").glob("*-values.yaml"))


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def predictors(isvc: dict) -> Iterator[tuple[str, dict]]:
    """The stable predictor and every canary predictor, named."""
    yield "stable", isvc["spec"]["predictor"]
    for canary in isvc["spec"].get("canary", []):
        yield f"canary {canary['predictor'].get('name')}", canary["predictor"]


def pod_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    """Every pod spec an object creates, with a name to report: KServe predictors carry pod fields inline."""
    kind = doc["kind"]
    if kind == "InferenceService":
        for name, predictor in predictors(doc):
            yield f"{doc['metadata']['name']} {name}", predictor
    elif kind == "Job":
        yield f"Job {doc['metadata']['name']}", doc["spec"]["template"]["spec"]
    elif kind == "Pod":
        yield f"Pod {doc['metadata']['name']}", doc["spec"]


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def server_container(predictor: dict) -> dict:
    (container,) = [c for c in predictor["containers"] if c["name"] == "kserve-container"]
    return container


def flags(container: dict) -> dict[str, str]:
    """`--name=value` arguments as a mapping."""
    pairs = [arg.removeprefix("--").split("=", 1) for arg in container.get("args", []) if arg.startswith("--")]
    return {pair[0]: pair[1] if len(pair) == 2 else "" for pair in pairs}


def env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def _strict(schema: dict) -> dict:
    """Closes every object that lists its properties, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(item) for item in schema]
    return schema


@cache
def crd_validator(path: Path, version: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_schema(path, version))


@cache
def crd_schema(path: Path, version: str) -> dict:
    """The OpenAPI schema of one version of a CustomResourceDefinition file, closed against unknown fields."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KServe CRD is 39k lines: libyaml parses it 7x faster
    docs = yaml.load_all(path.read_text(), Loader=loader)
    crd = next(doc for doc in docs if doc and doc["kind"] == "CustomResourceDefinition")
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return _strict(served["schema"]["openAPIV3Schema"])
