"""The GitHub workflows and the hack/ scripts: valid, audited, pinned, and in step with the project's own pins.

check-jsonschema's schemas for workflows and dependabot ship inside the package, so these checks run offline.
"""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from chart_helpers import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yaml"))
BIN = Path(sys.executable).parent
# owner/repo[/path]@<full commit SHA> # vX.Y.Z
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+(\.\d+){1,2}$")


def hack_scripts() -> list[Path]:
    scripts = []
    for path in sorted((REPO / "hack").rglob("*")):
        if not path.is_file():
            continue
        first_line = path.read_bytes().split(b"\n", 1)[0]
        if path.suffix == ".sh" or (first_line.startswith(b"#!") and b"sh" in first_line.rsplit(b"/", 1)[-1]):
            scripts.append(path)
    return scripts


def tool(name: str) -> str:
    local = BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: it comes with the test extras (make install)")
    return found


def test_the_workflows_exist():
    assert {path.name for path in WORKFLOWS} == {"ci.yaml", "release.yaml", "deploy.yaml"}


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
def test_every_workflow_validates(schema):
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", schema, *map(str, WORKFLOWS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_config_validates():
    config = REPO / ".github" / "dependabot.yml"
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_of_medium_severity_or_more():
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--format", "json", str(REPO / ".github" / "workflows")],
        capture_output=True,
        text=True,
    )
    findings = json.loads(result.stdout or "[]")
    serious = [
        f"{f['ident']} ({f['determinations']['severity']}): {f['desc']}"
        for f in findings
        if f["determinations"]["severity"] in ("Medium", "High")
    ]
    assert not serious, "\n".join(serious) + "\n" + result.stderr[-2000:]


def uses_lines() -> list[tuple[str, int, str]]:
    found = []
    for path in WORKFLOWS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"^\s*(?:-\s+)?uses:\s*(.+?)\s*$", line)
            if match:
                found.append((path.name, number, match.group(1)))
    return found


def test_every_action_is_pinned_to_a_commit_sha_with_its_version_in_a_comment():
    assert uses_lines(), "no `uses:` found: the pattern no longer matches the workflows"
    unpinned = [f"{name}:{number}: {ref}" for name, number, ref in uses_lines() if not PINNED.match(ref)]
    assert not unpinned, "pin these to a full commit SHA, with `# vX.Y.Z` after it:\n" + "\n".join(unpinned)


def test_the_pin_check_refuses_tags_short_shas_and_missing_comments():
    sha = "11bd71901bbe5b1630ceea73d27597364c9af683"
    assert PINNED.match(f"actions/checkout@{sha} # v4.2.2")
    for ref in ("actions/checkout@v4", f"actions/checkout@{sha[:12]} # v4", f"actions/checkout@{sha}", "a/b@main"):
        assert not PINNED.match(ref), ref


def test_one_action_version_across_the_workflows():
    versions: dict[str, set[str]] = {}
    for _, _, ref in uses_lines():
        action, pin = ref.split("@", 1)
        versions.setdefault(action, set()).add(pin)
    assert {action: pins for action, pins in versions.items() if len(pins) > 1} == {}


def project_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = {}
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^;\s]+)", requirement)
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


def test_packages_the_workflows_install_are_pinned_as_the_project_pins_them():
    pins = project_pins()
    installed = []
    for path in WORKFLOWS:
        for name, _, version in re.findall(r"'?([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([0-9][^\s']*)", path.read_text()):
            installed.append((path.name, name.lower(), version))
    assert installed, "no pinned pip installs found in the workflows"
    drift = [
        f"{file}: {name}=={version}, pyproject {pins.get(name)}"
        for file, name, version in installed
        if pins.get(name) != version
    ]
    assert not drift, "\n".join(drift)


def test_every_job_has_least_privilege_and_the_workflow_none():
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        assert workflow["permissions"] == {}, f"{path.name}: set `permissions: {{}}` at the top"
        for name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{path.name}: job {name} must say which permissions it needs"
            assert "timeout-minutes" in job, f"{path.name}: job {name} has no timeout-minutes"
            writes = {scope for scope, level in job["permissions"].items() if level == "write"}
            assert writes <= {"packages", "contents"}, f"{path.name}: job {name} writes {writes}"


def test_pull_request_runs_are_cancelled_by_newer_pushes():
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yaml").read_text())
    assert ci["concurrency"]["cancel-in-progress"] is True


def test_the_deploy_workflow_is_manual_and_behind_an_environment():
    deploy = yaml.safe_load((REPO / ".github" / "workflows" / "deploy.yaml").read_text())
    triggers = deploy[True] if True in deploy else deploy["on"]  # YAML 1.1 reads the key `on` as a boolean
    assert set(triggers) == {"workflow_dispatch"}
    assert {job.get("environment") for job in deploy["jobs"].values()} == {"production"}
    steps = [step.get("name", "") for job in deploy["jobs"].values() for step in job["steps"]]
    for stage in ("1. Evaluation gate", "2. Index", "3. Canary", "4. Canary analysis", "5. Promote", "5. Roll back"):
        assert any(name.startswith(stage) for name in steps), f"deploy.yaml lacks the step {stage!r}"
    assert any("model registry" in name.lower() for name in steps), "the place for the model registry step is gone"


def test_kind_job_uses_the_committed_kind_config():
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yaml").read_text())
    kind_steps = [s for s in ci["jobs"]["kind"]["steps"] if s.get("uses", "").startswith("helm/kind-action@")]
    assert [s["with"]["config"] for s in kind_steps] == ["manifests/kind-config.yaml"]


def test_every_hack_script_and_the_ci_entry_point_pass_shellcheck():
    binary = shutil.which("shellcheck")
    if binary is None:
        pytest.skip("shellcheck is not installed: run hack/tools/shellcheck.sh (make tools)")
    scripts = [*hack_scripts(), REPO / ".ci" / "run"]
    assert len(scripts) >= 10, scripts
    result = subprocess.run(
        [binary, "--external-sources", *(str(p.relative_to(REPO)) for p in scripts)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hack_script_that_is_run_directly_is_executable():
    sourced = {"container-engine.sh", "apt.sh"}
    not_executable = [
        str(p.relative_to(REPO)) for p in hack_scripts() if p.name not in sourced and not p.stat().st_mode & 0o111
    ]
    assert not not_executable


def test_the_released_image_is_pushed_with_an_sbom_and_provenance():
    release = yaml.safe_load((REPO / ".github" / "workflows" / "release.yaml").read_text())
    pushes = [
        step["with"]
        for job in release["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("docker/build-push-action@") and step.get("with", {}).get("push")
    ]
    assert pushes, "the release workflow pushes no image"
    for push in pushes:
        assert push.get("sbom") is True and str(push.get("provenance", "")).startswith("mode=max"), push
