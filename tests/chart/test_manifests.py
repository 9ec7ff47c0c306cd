"""The plain manifests in manifests/ are exactly what hack/render-manifests.sh renders from the chart today."""

import subprocess
from pathlib import Path

import yaml
from chart_helpers import REPO

MANIFESTS = REPO / "manifests"


def test_rendered_manifests_are_up_to_date(helm: str, tmp_path: Path) -> None:
    subprocess.run(["bash", str(REPO / "hack" / "render-manifests.sh"), str(tmp_path)], check=True, capture_output=True)
    fresh = {path.relative_to(tmp_path): path.read_text() for path in tmp_path.rglob("*.yaml")}
    committed = {path.relative_to(MANIFESTS): path.read_text() for path in MANIFESTS.glob("*/*.yaml")}
    assert fresh, "hack/render-manifests.sh rendered nothing"
    stale = sorted(str(path) for path in fresh.keys() | committed.keys() if fresh.get(path) != committed.get(path))
    assert not stale, f"manifests/ is out of date for {stale}: run `make manifests` and commit the result"


def test_manifests_hold_no_helm_test_hooks() -> None:
    for path in MANIFESTS.glob("*/*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert "helm.sh/hook" not in doc["metadata"].get("annotations", {}), path


def test_kind_config_describes_a_kind_cluster() -> None:
    config = yaml.safe_load((MANIFESTS / "kind-config.yaml").read_text())
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert [node["role"] for node in config["nodes"]].count("control-plane") == 1
