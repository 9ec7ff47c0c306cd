"""The Prometheus rules: valid, unit-tested alert by alert, and each alert tells the on-call where its runbook is."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "rules" / "image-search.rules.yaml"
RULE_TESTS = sorted((ROOT / "monitoring" / "rules" / "tests").glob("*.yaml"))
RUNBOOK_URL = "https://github.com/image-search/image-search/blob/main/docs/runbooks/{}.md"
RUNBOOK_SECTIONS = ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation")


def load_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


ALERTS = [rule for rule in load_rules() if "alert" in rule]
ALERT_NAMES = [rule["alert"] for rule in ALERTS]


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: run hack/tools/prometheus.sh"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def runbook_name(alert: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", alert).lower()


def test_promtool_check_rules_is_clean():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    assert RULE_TESTS, "no promtool unit tests found"
    result = promtool("test", "rules", *(path.name for path in RULE_TESTS), cwd=RULE_TESTS[0].parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_required_alerts_exist():
    # High error ratio, high p99 latency, predictor down/absent, Milvus unavailable, GPU memory, drift, top-1.
    assert set(ALERT_NAMES) == {
        "ImageSearchHighErrorRatio",
        "ImageSearchHighP99Latency",
        "ImageSearchPredictorDown",
        "ImageSearchPredictorAbsent",
        "ImageSearchMilvusUnavailable",
        "ImageSearchGpuMemoryNearFull",
        "ImageSearchQueryDrift",
        "ImageSearchLowTop1Similarity",
    }
    assert len(ALERT_NAMES) == len(set(ALERT_NAMES))


@pytest.mark.parametrize("alert", ALERTS, ids=ALERT_NAMES)
def test_each_alert_is_a_plain_mapping_the_chart_can_override(alert):
    # The chart reads this file and overrides `for` and `severity` per alert: no other shape is allowed.
    assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}
    assert {"summary", "description", "runbook_url"} <= set(alert["annotations"])
    assert re.fullmatch(r"\d+[smh]", alert["for"])


@pytest.mark.parametrize("alert", ALERTS, ids=ALERT_NAMES)
def test_each_alert_links_a_runbook_that_says_what_to_do(alert):
    name = runbook_name(alert["alert"])
    assert alert["annotations"]["runbook_url"] == RUNBOOK_URL.format(name)
    runbook = ROOT / "docs" / "runbooks" / f"{name}.md"
    assert runbook.is_file(), f"{runbook.relative_to(ROOT)} is missing"
    text = runbook.read_text()
    assert alert["alert"] in text
    for section in RUNBOOK_SECTIONS:
        assert section in text, f"{runbook.name} has no '{section}' section"


def alert_checks() -> dict[str, list[list]]:
    checks: dict[str, list[list]] = {}
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for check in group.get("alert_rule_test", []):
                checks.setdefault(check["alertname"], []).append(check.get("exp_alerts") or [])
    return checks


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_each_alert_is_proven_to_fire_and_to_stay_quiet(alert):
    checks = alert_checks().get(alert, [])
    assert any(expected for expected in checks), f"no promtool test shows {alert} firing"
    assert any(not expected for expected in checks), f"no promtool test shows {alert} quiet"


def test_the_index_of_runbooks_lists_every_alert():
    index = (ROOT / "docs" / "runbooks" / "README.md").read_text()
    for alert in ALERT_NAMES:
        assert f"[{alert}]({runbook_name(alert)}.md)" in index
