"""A running process's CPU time by the stage its threads serve, read from /proc: where a server's CPU goes per image.

The server names its OS threads after their stage (predictor/observability/thread_names.py); torch's OpenMP
threads carry the device thread's name, and the main thread runs the event loop (KServe's data plane, parsing,
responses).
"""

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_STAGES = (("device", "forward"), ("decode", "decode"), ("search", "search"))
ORDER = ("forward", "decode", "event loop", "search", "other")


def cpu_by_stage(pid: int) -> dict[str, float]:
    """CPU seconds so far of each stage's threads; empty where /proc is not there."""
    totals: dict[str, float] = {}
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir() if tasks.is_dir() else ():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended between listing and reading
            continue
        if task.name == str(pid):
            stage = "event loop"
        else:
            stage = next((stage for prefix, stage in _STAGES if name.startswith(prefix)), "other")
        totals[stage] = totals.get(stage, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return totals


def describe_cpu(
    before: dict[str, float], after: dict[str, float], images: float, wall_s: float, client_s: float
) -> str:
    """Server CPU per image by stage over one row, and how many of the cores the server and the client kept busy."""
    if not before or images <= 0:
        return ""
    spent = {stage: after.get(stage, 0.0) - before.get(stage, 0.0) for stage in ORDER}
    total = sum(spent.values())
    parts = ", ".join(f"{stage} {1000 * seconds / images:.1f}" for stage, seconds in spent.items())
    cores = len(os.sched_getaffinity(0))
    busy = (total + client_s) / wall_s
    return (
        f"server CPU ms per image: {parts} (total {1000 * total / images:.1f}); client {1000 * client_s / images:.1f}; "
        f"{busy:.2f} of {cores} cores busy"
    )
