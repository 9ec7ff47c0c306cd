"""skaffold.yaml matches the v4beta14 schema and wires the built image, profiles and port-forwards."""

import json
from pathlib import Path

import jsonschema
import yaml
from chart_helpers import REPO

CONFIG = yaml.safe_load((REPO / "skaffold.yaml").read_text())


def test_skaffold_config_matches_the_v4beta14_schema(schemas: Path) -> None:
    schema = json.loads((schemas / "skaffold" / "v4beta14.json").read_text())
    assert CONFIG["apiVersion"] == "skaffold/v4beta14"
    jsonschema.validate(CONFIG, schema, cls=jsonschema.Draft7Validator)


def test_helm_release_gets_the_image_skaffold_built() -> None:
    (artifact,) = CONFIG["build"]["artifacts"]
    (release,) = CONFIG["deploy"]["helm"]["releases"]
    key = artifact["image"].replace("-", "_")
    assert release["chartPath"] == "charts/image-search"
    assert release["setValueTemplates"] == {
        "image.repository": f"{{{{.IMAGE_REPO_{key}}}}}",
        "image.tag": f"{{{{.IMAGE_TAG_{key}}}}}",
    }


def test_kind_and_gpu_profiles_exist() -> None:
    profiles = {profile["name"]: profile for profile in CONFIG["profiles"]}
    assert profiles["kind"]["build"]["local"]["push"] is False
    kind_values = [p["value"] for p in profiles["kind"]["patches"] if p["path"].endswith("/valuesFiles")]
    assert kind_values == [["charts/image-search/ci/cpu-values.yaml"]]
    gpu_values = [p["value"] for p in profiles["gpu"]["patches"] if p["path"].endswith("/setValues")]
    assert gpu_values == [{"gpu.enabled": True}]


def test_rest_and_grpc_ports_are_forwarded() -> None:
    assert sorted((f["port"], f["localPort"]) for f in CONFIG["portForward"]) == [(8080, 8080), (8081, 8081)]


def test_the_kind_profile_builds_with_torchs_cpu_wheels() -> None:
    profiles = {profile["name"]: profile for profile in CONFIG["profiles"]}
    build_args = [p["value"] for p in profiles["kind"]["patches"] if p["path"].endswith("/docker/buildArgs")]
    assert build_args == [{"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}]
