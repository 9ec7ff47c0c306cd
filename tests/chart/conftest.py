"""Shared set-up of the chart tests: where helm, the chart and the vendored schemas are, and a cached renderer."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_helpers import CHART, REPO

RULES_FILE = Path("files/rules/image-search.rules.yaml")

# Stand-ins for the monitoring files the chart ships, used only when a checkout does not have them yet, so the
# wiring can be tested on its own. Real copies come from monitoring/ (hack/sync-monitoring.sh).
STAND_IN_RULES = {
    "groups": [
        {
            "name": "image-search.alerts",
            "rules": [
                {
                    "alert": "ImageSearchHighErrorRatio",
                    "expr": "sum(rate(image_search_requests_total{outcome!='success'}[5m])) > 0",
                    "for": "5m",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "s", "description": "d", "runbook_url": "https://example.org/r"},
                },
                {"record": "image_search:requests:rate5m", "expr": "sum(rate(image_search_requests_total[5m]))"},
            ],
        }
    ]
}


def find_helm() -> str | None:
    local = REPO / "bin" / "helm"
    return str(local) if local.exists() else shutil.which("helm")


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        pytest.skip("helm is not installed: run hack/tools/k8s.sh (make tools) to put it in bin/")
    return path


@pytest.fixture(scope="session")
def schemas() -> Path:
    path = REPO.parent / "shared" / "schemas"
    if not path.is_dir():
        pytest.skip(f"vendored schemas not found at {path}: the schema checks need ../shared/schemas next to the repo")
    return path


@pytest.fixture(scope="session")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart, or a copy of it with stand-in monitoring files when the checkout lacks them."""
    if (CHART / RULES_FILE).exists() and list((CHART / "files" / "dashboards").glob("*.json")):
        return CHART
    copy = tmp_path_factory.mktemp("chart") / "image-search"
    shutil.copytree(CHART, copy)
    (copy / RULES_FILE).parent.mkdir(parents=True, exist_ok=True)
    if not (copy / RULES_FILE).exists():
        (copy / RULES_FILE).write_text(yaml.safe_dump(STAND_IN_RULES))
    dashboards = copy / "files" / "dashboards"
    dashboards.mkdir(parents=True, exist_ok=True)
    if not list(dashboards.glob("*.json")):
        (dashboards / "stand-in.json").write_text('{"title": "stand-in", "panels": []}\n')
    return copy


class Renderer:
    """Runs `helm template` and parses the result; identical calls are served from a cache."""

    def __init__(self, helm: str, chart: Path) -> None:
        self.helm = helm
        self.chart = chart
        self._cache: dict[tuple, list[dict]] = {}

    def command(self, scenario: str | None, *set_values: str, chart: Path | None = None) -> list[str]:
        chart = chart or self.chart
        cmd = [self.helm, "template", "image-search", str(chart), "--namespace", "search"]
        if scenario:
            cmd += ["--values", str(chart / "ci" / f"{scenario}-values.yaml")]
        for value in set_values:
            cmd += ["--set", value]
        return cmd

    def run(self, scenario: str | None, *set_values: str, chart: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(scenario, *set_values, chart=chart), capture_output=True, text=True)

    def __call__(self, scenario: str | None = None, *set_values: str, chart: Path | None = None) -> list[dict]:
        key = (scenario, set_values, chart)
        if key not in self._cache:
            result = self.run(scenario, *set_values, chart=chart)
            assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
            self._cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return self._cache[key]

    def failure(self, scenario: str | None, *set_values: str) -> str:
        """Renders values the chart must refuse; returns helm's error message."""
        result = self.run(scenario, *set_values)
        assert result.returncode != 0, f"helm template accepted {scenario} {set_values}, expected a refusal"
        return result.stderr


@pytest.fixture(scope="session")
def render(helm: str, chart: Path) -> Renderer:
    return Renderer(helm, chart)
