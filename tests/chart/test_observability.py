"""Monitors, rules and dashboards appear behind their flags and follow the values that tune them."""

from pathlib import Path

import pytest
import yaml
from chart_helpers import of_kind, one

MONITORING_KINDS = ("PodMonitor", "ServiceMonitor", "PrometheusRule")


def alerts(rule: dict) -> dict[str, dict]:
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}


def rules_file(chart: Path) -> dict:
    return yaml.safe_load((chart / "files" / "rules" / "image-search.rules.yaml").read_text())


def file_alerts(chart: Path) -> dict[str, dict]:
    return {r["alert"]: r for group in rules_file(chart)["groups"] for r in group["rules"] if "alert" in r}


@pytest.mark.parametrize("scenario", [None, "cpu", "gpu", "canary", "knative", "indexing-job"])
def test_monitoring_objects_are_off_unless_asked_for(render, scenario: str | None) -> None:
    docs = render(scenario)
    assert not [doc for doc in docs if doc["kind"] in MONITORING_KINDS]
    assert not of_kind(docs, "ConfigMap")


def test_pod_monitor_scrapes_metrics_of_stable_and_canary_pods(render) -> None:
    docs = render("keda", "canary.enabled=true", "canary.storageUri=s3://m/2", "canary.version=2")
    monitor = one(docs, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["portNumber"], endpoint["path"]) == (8080, "/metrics")
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    isvc = one(docs, "InferenceService")
    assert selector <= isvc["spec"]["predictor"]["labels"].items()
    assert selector <= isvc["spec"]["canary"][0]["predictor"]["labels"].items()


def test_service_monitor_scrapes_through_a_headless_service_of_predictor_pods(render) -> None:
    docs = render("cpu", "metrics.serviceMonitor.enabled=true")
    monitor = one(docs, "ServiceMonitor")
    (service,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == "image-search-metrics"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= one(docs, "InferenceService")["spec"]["predictor"]["labels"].items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]


def test_prometheus_rule_carries_every_rule_of_the_chart_file(render, chart: Path) -> None:
    rule = one(render("keda"), "PrometheusRule")
    source = rules_file(chart)
    assert [g["name"] for g in rule["spec"]["groups"]] == [g["name"] for g in source["groups"]]
    assert sum(len(g["rules"]) for g in rule["spec"]["groups"]) == sum(len(g["rules"]) for g in source["groups"])
    for name, alert in alerts(rule).items():
        assert alert["annotations"]["runbook_url"], f"{name} has no runbook_url"


def test_alerts_can_be_switched_off_one_by_one(render, chart: Path) -> None:
    name = sorted(file_alerts(chart))[0]
    rule = one(render("keda", f"prometheusRule.disabled.{name}=true"), "PrometheusRule")
    assert name not in alerts(rule)
    assert len(alerts(rule)) == len(file_alerts(chart)) - 1


def test_alert_for_and_severity_can_be_overridden(render, chart: Path) -> None:
    name = sorted(file_alerts(chart))[0]
    docs = render(
        "keda", f"prometheusRule.customRules.{name}.for=17m", f"prometheusRule.customRules.{name}.severity=info"
    )
    overridden = alerts(one(docs, "PrometheusRule"))[name]
    original = file_alerts(chart)[name]
    assert (overridden["for"], overridden["labels"]["severity"]) == ("17m", "info")
    assert overridden["expr"] == original["expr"]
    assert overridden["annotations"] == original["annotations"]


def test_naming_an_unknown_alert_is_refused(render) -> None:
    message = render.failure("keda", "prometheusRule.disabled.NoSuchAlert=true")
    assert "NoSuchAlert" in message


def test_one_dashboard_configmap_per_json_file_with_the_sidecar_label(render, chart: Path) -> None:
    files = sorted(path.name for path in (chart / "files" / "dashboards").glob("*.json"))
    maps = of_kind(
        render("keda", "dashboards.label=grafana_dashboard_custom", "dashboards.labelValue=yes"), "ConfigMap"
    )
    assert sorted(key for cm in maps for key in cm["data"]) == files
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard_custom"] == "yes"
        (name,) = cm["data"]
        assert cm["data"][name] == (chart / "files" / "dashboards" / name).read_text()


def test_dashboards_get_the_default_grafana_label(render) -> None:
    for cm in of_kind(render("keda"), "ConfigMap"):
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "image-search"}


def test_request_logger_is_off_by_default_and_sends_to_its_sink_when_on(render) -> None:
    assert "logger" not in one(render("cpu"), "InferenceService")["spec"]["predictor"]
    docs = render(
        "cpu", "requestLogger.enabled=true", "requestLogger.url=http://sink.logs", "requestLogger.mode=request"
    )
    logger = one(docs, "InferenceService")["spec"]["predictor"]["logger"]
    assert logger == {"url": "http://sink.logs", "mode": "request"}
