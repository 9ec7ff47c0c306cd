"""The hand-written YAML files (not templates) pass yamllint."""

import pytest
from chart_helpers import CHART, REPO
from yamllint import linter
from yamllint.config import YamlLintConfig

CONFIG = YamlLintConfig(
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}"
)
FILES = [
    CHART / "Chart.yaml",
    CHART / "values.yaml",
    *sorted((CHART / "ci").glob("*.yaml")),
    REPO / "skaffold.yaml",
    REPO / "manifests" / "kind-config.yaml",
]


@pytest.mark.parametrize("path", FILES, ids=[str(path.relative_to(REPO)) for path in FILES])
def test_yaml_file_passes_yamllint(path) -> None:
    problems = list(linter.run(path.read_text(), CONFIG, str(path)))
    assert not problems, "\n".join(f"{path.name}:{p.line}:{p.column} {p.message}" for p in problems)
