"""Resident memory of another process, read from /proc: now, and the peak since a reset (Linux only)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"{field} is not in /proc/{pid}/status")


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def reset_peak_rss(pid: int) -> bool:
    """Restart the kernel's high-water mark (VmHWM) from the current RSS; False where the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmHWM") * 1024


@dataclass
class PeakRss:
    """Memory of one process over a stretch of time: RSS before it, and the peak during it (sampled and VmHWM)."""

    before: int
    peak: int = 0

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.before)


@contextlib.contextmanager
def watch_peak_rss(pid: int, interval_s: float = 0.01) -> Iterator[PeakRss]:
    """Samples RSS every `interval_s` while the block runs; the kernel's own peak counts too where it can be reset."""
    hwm = reset_peak_rss(pid)
    watched = PeakRss(before=rss_bytes(pid))
    watched.peak = watched.before
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, LookupError):
                watched.peak = max(watched.peak, rss_bytes(pid))
            stop.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield watched
    finally:
        stop.set()
        sampler.join()
        if hwm:
            with contextlib.suppress(OSError, LookupError):
                watched.peak = max(watched.peak, peak_rss_bytes(pid))
