"""Test scopes come from the folder a test lives in, so a test cannot forget its marker."""

from pathlib import Path

import pytest

SCOPES = {"unit", "e2e", "chart"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    scopes = set()
    for item in items:
        relative = Path(item.fspath).relative_to(tests_root)
        scope = relative.parts[0] if len(relative.parts) > 1 else None
        if scope in SCOPES:
            item.add_marker(getattr(pytest.mark, scope))
            scopes.add(scope)
    if "e2e" in scopes and len(scopes) > 1:
        # tritonclient's gRPC stubs and KServe's register the same protobuf names; one process can load only one.
        raise pytest.UsageError(
            "run tests/e2e in its own pytest process (as `make test` does): the e2e clients' gRPC stubs and KServe's, "
            "used by the unit and chart tests, cannot be loaded in one process"
        )
