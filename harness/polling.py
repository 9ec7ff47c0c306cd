"""Wait for something observable to become true, with a deadline; never a bare sleep as synchronisation."""

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")
