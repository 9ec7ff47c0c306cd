"""Test scopes come from the folder a test lives in, so a test cannot forget its marker."""

from pathlib import Path

import pytest

SCOPES = {"unit", "e2e", "chart", "container", "kind"}
# Folders whose tests load tritonclient's gRPC stubs: they cannot share a process with the KServe-importing ones.
CLIENT_SCOPES = {"e2e", "container", "kind"}


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
