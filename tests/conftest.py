"""Test scopes come from the folder a test lives in, so a test cannot forget its marker."""

from pathlib import Path

import pytest

SCOPES = {"unit", "e2e", "chart"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    for item in items:
        relative = Path(item.fspath).relative_to(tests_root)
        scope = relative.parts[0] if len(relative.parts) > 1 else None
        if scope in SCOPES:
            item.add_marker(getattr(pytest.mark, scope))
