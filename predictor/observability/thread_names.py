"""Python's thread names handed to the operating system as well, so that `top -H`, `ps -L` and /proc name the stage
that uses the CPU (device, decode, search) instead of a column of "python". torch's OpenMP threads inherit the name
of the device thread that starts them."""

import contextlib
import threading
from pathlib import Path

# Linux keeps 15 bytes of a thread's name.
OS_NAME_BYTES = 15


def name_os_thread() -> None:
    """Give the calling thread's Python name to its OS thread; where the OS has no such file, nothing happens."""
    name = threading.current_thread().name.encode("ascii", "replace")[:OS_NAME_BYTES]
    with contextlib.suppress(OSError):
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_bytes(name)
