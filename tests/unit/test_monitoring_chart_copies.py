"""Helm cannot read outside the chart, so the chart carries copies of monitoring/; they must not drift."""

import filecmp
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "charts" / "image-search" / "files"
PAIRS = [
    (ROOT / "monitoring" / "dashboards", FILES / "dashboards", "*.json"),
    (ROOT / "monitoring" / "rules", FILES / "rules", "*.yaml"),
]


@pytest.mark.parametrize(("canonical", "copy", "pattern"), PAIRS, ids=["dashboards", "rules"])
def test_chart_copies_are_identical_to_monitoring(canonical, copy, pattern):
    wanted = sorted(path.name for path in canonical.glob(pattern))
    present = sorted(path.name for path in copy.glob(pattern))
    assert wanted, f"nothing to copy in {canonical.relative_to(ROOT)}"
    assert present == wanted, "run hack/sync-monitoring.sh"
    for name in wanted:
        assert filecmp.cmp(canonical / name, copy / name, shallow=False), f"{name} differs: run hack/sync-monitoring.sh"
