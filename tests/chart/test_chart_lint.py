"""helm lint --strict passes for the defaults and every ci scenario."""

import subprocess
from pathlib import Path

import pytest
from chart_helpers import SCENARIOS


@pytest.mark.parametrize("scenario", [None, *SCENARIOS], ids=["defaults", *SCENARIOS])
def test_chart_passes_helm_lint_strict(helm: str, chart: Path, scenario: str | None) -> None:
    cmd = [helm, "lint", "--strict", str(chart)]
    if scenario:
        cmd += ["--values", str(chart / "ci" / f"{scenario}-values.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_scenario_the_issue_asks_for_exists() -> None:
    assert {"cpu", "gpu", "canary", "knative", "keda", "indexing-job"} <= set(SCENARIOS)
