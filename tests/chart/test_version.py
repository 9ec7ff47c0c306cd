"""One version: pyproject.toml's. The package reports it, and the chart's appVersion (the image it deploys) and
version agree with it, so a release tag names one version everywhere."""

import tomllib

import pytest
import yaml
from chart_helpers import REPO

PYPROJECT = REPO / "pyproject.toml"
CHART = REPO / "charts" / "image-search" / "Chart.yaml"


def project_version() -> str:
    return tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_the_chart_deploys_the_version_pyproject_names():
    chart = yaml.safe_load(CHART.read_text())
    assert str(chart["appVersion"]) == project_version(), "set appVersion in Chart.yaml to pyproject's version"
    assert str(chart["version"]) == project_version(), "set version in Chart.yaml to pyproject's version"


def test_the_package_reports_the_installed_version():
    predictor = pytest.importorskip("predictor", reason="the predictor package is not installed")
    assert predictor.__version__ == project_version(), "reinstall (make install) after changing the version"
