"""Prints the figures the image tests measured at the end of the run."""

import pytest

from tests.container.figures import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("image figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
