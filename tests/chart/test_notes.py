"""The notes printed after `helm install` tell the user how to reach the service and send a first query."""

import subprocess

import pytest
from chart_helpers import CHART


def notes(helm: str, *values: str) -> str:
    cmd = [helm, "install", "image-search", str(CHART), "--namespace", "search", "--dry-run=client"]
    for value in values:
        cmd += ["--values", str(CHART / "ci" / value)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


@pytest.mark.parametrize("scenario", ["cpu-values.yaml", "knative-values.yaml"])
def test_notes_show_a_first_query_and_the_helm_test(helm: str, scenario: str) -> None:
    text = notes(helm, scenario)
    assert "curl -s http://localhost:8080/v1/models/image-search:predict" in text
    assert "port-forward" in text
    assert "helm test image-search -n search" in text


def test_notes_forward_to_a_pod_in_knative_mode_where_the_service_is_external(helm: str) -> None:
    assert "port-forward service/image-search-predictor 8080:80" in notes(helm, "cpu-values.yaml")
    assert "port-forward service/" not in notes(helm, "knative-values.yaml")


def test_notes_point_at_the_search_page_only_when_it_is_served(helm: str) -> None:
    assert "http://localhost:8080/ui/" in notes(helm, "search-page-values.yaml")
    assert "/ui/" not in notes(helm, "cpu-values.yaml")
