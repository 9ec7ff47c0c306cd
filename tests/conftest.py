"""Test scopes come from the folder a test lives in, so a test cannot forget its marker.

Property tests marked `fuzz` run a bounded number of examples by default; `make fuzz` selects them all and runs them
under the `fuzz` Hypothesis profile (HYPOTHESIS_PROFILE=fuzz, FUZZ_EXAMPLES examples per test). Tests marked `slow`
are left out of `make test`, which has a time budget, and run by `make test-slow` and `make bench`.
"""

import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import settings

SCOPES = {"unit", "e2e", "chart", "container", "kind"}
# Folders whose tests load tritonclient's gRPC stubs: they cannot share a process with the KServe-importing ones.
CLIENT_SCOPES = {"e2e", "container", "kind"}

# A deadline per example is how "nothing hangs" is checked; it is generous because the machine may be shared.
settings.register_profile("default", max_examples=60, deadline=timedelta(seconds=3), derandomize=True, database=None)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")), deadline=timedelta(seconds=5)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The servers and CLI commands the tests start run the eager network unless a test asks for `--compile auto`, the
# default users get: a compile costs a core for about a minute per process, and tests start dozens. The compilation
# tests (unit), the failed compile of test_cold_start and the container tests run compiled.
os.environ.setdefault("IMAGE_SEARCH_COMPILE", "off")
# For the same reason their servers run the network in their own process (a second process with torch costs seconds
# of a core each); test_forward_process and the container tests run it in the child, the users' default.
os.environ.setdefault("IMAGE_SEARCH_FORWARD_PROCESS", "off")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: property tests of parsers on untrusted input; `make fuzz` runs them long")
    config.addinivalue_line(
        "markers",
        "slow: checks too long for `make test` (which leaves them out); `make test-slow` and `make bench` run them",
    )
    config.addinivalue_line(
        "markers",
        "serial: times the server against the clock; `make test` runs it alone, after the tests that run in parallel",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    scopes = set()
    for item in items:
        relative = Path(item.fspath).relative_to(tests_root)
        scope = relative.parts[0] if len(relative.parts) > 1 else None
        if scope in SCOPES:
            item.add_marker(getattr(pytest.mark, scope))
            scopes.add(scope)
    if scopes & CLIENT_SCOPES and scopes - CLIENT_SCOPES:
        # tritonclient's gRPC stubs and KServe's register the same protobuf names; one process can load only one.
        raise pytest.UsageError(
            "run tests/e2e, tests/container and tests/kind in a pytest process of their own (as `make test` does): "
            "their clients' gRPC stubs and KServe's, used by the unit and chart tests, cannot be loaded in one process"
        )
