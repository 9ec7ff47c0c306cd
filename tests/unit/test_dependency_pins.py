"""Every dependency is pinned: the direct ones exactly in pyproject.toml, the whole transitive set in requirements/."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.predictor_server import free_port

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCKS = {name: REPO / "requirements" / f"{name}.txt" for name in ("runtime", "test")}
PIN = re.compile(r"^(?P<name>[a-z0-9][a-z0-9.-]*)==(?P<version>[^\s;=<>!~]+)$")


BUILD_REQUIRES = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]


def direct(group: str) -> list[Requirement]:
    if group == "runtime":
        texts = BUILD_REQUIRES + PROJECT["dependencies"]
    else:
        texts = PROJECT["optional-dependencies"][group]
    return [Requirement(text) for text in texts if canonicalize_name(Requirement(text).name) != PROJECT["name"]]


def locked(name: str) -> dict[str, str]:
    pins = {}
    for line in LOCKS[name].read_text().splitlines():
        if line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{LOCKS[name].name}: {line!r} is not name==version"
        pins[match["name"]] = match["version"]
    return pins


@pytest.mark.parametrize("group", ["runtime", *PROJECT["optional-dependencies"]])
def test_pyproject_pins_every_direct_dependency_exactly(group):
    for requirement in direct(group):
        (spec, *more) = list(requirement.specifier)
        assert not more and spec.operator == "==" and "*" not in spec.version, f"{group}: {requirement} is not exact"


def test_the_locks_hold_every_direct_pin_at_its_version():
    runtime, test = locked("runtime"), locked("test")
    for requirement in direct("runtime"):
        assert runtime.get(canonicalize_name(requirement.name)) == next(iter(requirement.specifier)).version
    for group in PROJECT["optional-dependencies"]:
        for requirement in direct(group):
            assert test.get(canonicalize_name(requirement.name)) == next(iter(requirement.specifier)).version
    assert runtime.items() <= test.items(), "the test set must install the runtime set unchanged"


def test_the_locks_match_the_installed_environment():
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "lock-requirements.py"), "--check"], text=True, capture_output=True
    )
    assert result.returncode == 0, result.stderr


def test_audit_says_plainly_when_no_vulnerability_database_answers():
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [str(REPO / "hack" / "audit.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "AUDIT_PYPI_URL": nowhere, "AUDIT_OSV_URL": nowhere},
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "NOT AUDITED" in result.stderr and "no vulnerability database can be reached" in result.stderr
