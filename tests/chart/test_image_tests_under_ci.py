"""Where the image cannot be run, the image tests skip and say why; under CI=true they fail the run instead.

Checked by running tests/container in its own pytest with an engine that does not exist, so no image is needed.
"""

import os
import subprocess
import sys

from chart_helpers import REPO

MISSING_ENGINE = "no-such-container-engine"


def image_tests(**environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "IMAGE", "CONTAINER_ENGINE")}
    env.update(CONTAINER_ENGINE=MISSING_ENGINE, **environment)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/container", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def summary(result: subprocess.CompletedProcess) -> str:
    return result.stdout.strip().splitlines()[-1]


def test_without_a_container_engine_the_image_tests_skip_and_say_why():
    result = image_tests(CI="false")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{MISSING_ENGINE} is not installed" in result.stdout
    assert "skipped" in summary(result) and "passed" not in summary(result) and "error" not in summary(result)


def test_under_ci_a_missing_container_engine_fails_the_image_tests():
    result = image_tests(CI="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"CI=true, so the image tests must run, but {MISSING_ENGINE} is not installed" in result.stdout
    assert "error" in summary(result) and "skipped" not in summary(result) and "passed" not in summary(result)
