"""The Grafana dashboard: portable across Grafana instances, every query valid PromQL, every asked-for panel there."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "dashboards" / "image-search.json"
# What Grafana substitutes before sending a query; any value of the right kind makes the expression parse.
VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "$model": ".*", "$model_version": ".*"}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def expressions(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]


def substitute(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_datasource_is_a_template_variable_used_by_every_panel():
    dashboard = load()
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"


def test_namespace_and_model_variables_filter_every_model_query():
    dashboard = load()
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace", "model", "model_version"]
    for expr in expressions(dashboard):
        assert 'namespace=~"$namespace"' in expr, expr
        if "image_search_index_rows" not in expr:
            assert 'model=~"$model"' in expr, expr


def test_every_expression_is_valid_promql(tmp_path):
    exprs = [substitute(expr) for expr in expressions(load())]
    assert not [expr for expr in exprs if "$" in expr], "a dashboard variable is not substituted in this test"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard_expr_{i}", "expr": expr} for i, expr in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-expressions.yaml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run hack/tools/prometheus.sh"
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_panels_operators_asked_for_are_there():
    titles = [panel["title"] for panel in panels(load())]
    for wanted in [
        "Requests by outcome",
        "Error ratio",
        "Request latency",
        "Stage latency p50",
        "Stage latency p95",
        "Stage latency p99",
        "Batch size",
        "Queue wait",
        "In-flight requests and search backlog",
        "GPU utilisation",
        "GPU memory",
        "Indexed vectors",
        "Top-1 similarity",
        "Query drift score",
        "Versions side by side",
    ]:
        assert wanted in titles
    assert len(titles) == len(set(titles)), "panel titles must be unique: tests and screenshots name panels by title"


def test_canary_row_compares_every_version_of_the_model():
    dashboard = load()
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    canary_row = next(row for row in rows if row["title"].startswith("Canary vs stable"))
    after = [panel for panel in panels(dashboard) if panel["gridPos"]["y"] > canary_row["gridPos"]["y"]]
    assert len(after) >= 4
    for panel in after:
        for target in panel["targets"]:
            assert "$model_version" not in target["expr"], panel["title"]
            assert "model_version" in target["expr"] or "model_version" in target["legendFormat"], panel["title"]


def test_panels_do_not_overlap():
    occupied: set[tuple[int, int]] = set()
    for panel in load()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, panel["title"]
        occupied |= cells


def test_panel_ids_are_unique():
    ids = [panel["id"] for panel in load()["panels"]]
    assert len(ids) == len(set(ids))
    assert re.fullmatch(r"[a-z0-9-]+", load()["uid"])
