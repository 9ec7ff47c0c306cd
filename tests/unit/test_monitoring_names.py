"""Every metric name a dashboard or rule reads is one the service exports or a rule records: no panel can be
empty because of a typo or a renamed metric."""

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from predictor.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "rules" / "image-search.rules.yaml"
DASHBOARD = ROOT / "monitoring" / "dashboards" / "image-search.json"
STANDARD = {"up"}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported_names() -> set[str]:
    names = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression: what is left once strings, matchers, ranges and groupings are gone."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if not call and name not in KEYWORDS:
            names.add(name)
    return names


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(series, label): only the series is PromQL.
            exprs.append(re.sub(r"label_values\((.*),\s*\w+\)", r"\1", variable["query"]["query"]))
    return exprs


def test_the_name_extraction_finds_series_and_skips_the_rest():
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(image_search_x_bucket{model=~"$model"}[$__rate_interval])))'
        " / on (namespace) group_left (pod) ns:image_search_y:rate5m and up == 0"
    )
    assert metric_names(expr) == {"image_search_x_bucket", "ns:image_search_y:rate5m", "up"}


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_series_read_is_exported_or_recorded(source):
    exprs = rule_expressions() if source == "rules" else dashboard_expressions()
    known = exported_names() | recorded_names() | STANDARD
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used, "no series names found: the extraction is broken"
    assert used <= known, f"unknown series: {sorted(used - known)}"


def test_every_recording_rule_is_read_by_the_dashboard_or_an_alert():
    used = set().union(*(metric_names(expr) for expr in rule_expressions() + dashboard_expressions()))
    assert recorded_names() <= used, f"recorded but never read: {sorted(recorded_names() - used)}"


def test_the_dashboard_shows_every_exported_family():
    used = set().union(*(metric_names(expr) for expr in rule_expressions() + dashboard_expressions()))
    families = {
        family.name for obj in vars(metrics).values() if isinstance(obj, MetricWrapperBase) for family in obj.describe()
    }
    unread = {family for family in families if not any(name.startswith(family) for name in used)}
    assert not unread, f"exported but on no panel or rule: {sorted(unread)}"
