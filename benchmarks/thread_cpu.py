"""A running process's CPU time by the stage its threads serve, read from /proc: where a server's CPU goes per image.

The server names its OS threads after their stage (predictor/observability/thread_names.py); torch's OpenMP
threads carry the device thread's name, and the main thread runs the event loop (KServe's data plane, parsing,
responses). A server of several processes (the LitServe peer) is read as one figure for its whole process tree.
"""

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_STAGES = (("device", "forward"), ("decode", "decode"), ("search", "search"))
ORDER = ("forward", "decode", "event loop", "search", "other")


def cpu_by_stage(pid: int) -> dict[str, float]:
    """CPU seconds so far of each stage's threads; empty where /proc is not there. A child process whose name starts
    with "device" (the forward process, predictor/embedding/forward_process.py) counts as the forward stage."""
    totals: dict[str, float] = {}
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir() if tasks.is_dir() else ():
        try:
            name = (task / "comm").read_text().strip()
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended between listing and reading
            continue
        if task.name == str(pid):
            stage = "event loop"
        else:
            stage = next((stage for prefix, stage in _STAGES if name.startswith(prefix)), "other")
        totals[stage] = totals.get(stage, 0.0) + stat_cpu_seconds(stat)
    children = [child for child, stat in _process_stats().items() if _parent(stat) == pid] if totals else []
    for child in children:
        try:
            if Path(f"/proc/{child}/comm").read_text().startswith("device"):
                for task in Path(f"/proc/{child}/task").iterdir():
                    totals["forward"] = totals.get("forward", 0.0) + stat_cpu_seconds((task / "stat").read_text())
        except OSError:  # the child ended while it was read
            continue
    return totals


def _process_stats() -> dict[int, str]:
    """The /proc stat line of every process, by pid."""
    stats = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                stats[int(entry.name)] = (entry / "stat").read_text()
        except OSError:  # the process ended between listing and reading
            continue
    return stats


def _parent(stat: str) -> int:
    return int(stat.rsplit(")", 1)[1].split()[1])


def stat_cpu_seconds(stat: str) -> float:
    """User plus system CPU seconds of a /proc stat line; the fields after the command name, which may hold spaces."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_of_process_tree(pid: int) -> dict[str, float]:
    """CPU seconds so far of `pid` and every process under it, as one entry; empty where /proc is not there."""
    stats = _process_stats() if Path(f"/proc/{pid}").is_dir() else {}
    children: dict[int, list[int]] = {}
    for process, stat in stats.items():
        children.setdefault(_parent(stat), []).append(process)
    seconds = {process: stat_cpu_seconds(stat) for process, stat in stats.items()}
    if pid not in seconds:
        return {}
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += seconds[current]
        pending += children.get(current, [])
    return {"all processes": total}


def cores_available() -> int:
    return len(os.sched_getaffinity(0))


def cores_busy(before: dict[str, float], after: dict[str, float], wall_s: float) -> float | None:
    """How many cores the server kept busy over `wall_s`, from two readings of cpu_by_stage or cpu_of_process_tree."""
    if not before or wall_s <= 0:
        return None
    return sum(after.get(stage, 0.0) - before.get(stage, 0.0) for stage in before.keys() | after.keys()) / wall_s


def describe_cpu(
    before: dict[str, float], after: dict[str, float], images: float, wall_s: float, client_s: float
) -> str:
    """Server CPU per image by stage over one row, and how many of the cores the server and the client kept busy."""
    if not before or images <= 0:
        return ""
    stages = ORDER if after.keys() & set(ORDER) else sorted(after)
    spent = {stage: after.get(stage, 0.0) - before.get(stage, 0.0) for stage in stages}
    total = sum(spent.values())
    parts = ", ".join(f"{stage} {1000 * seconds / images:.1f}" for stage, seconds in spent.items())
    server, client = total / wall_s, client_s / wall_s
    return (
        f"server CPU ms per image: {parts} (total {1000 * total / images:.1f}); client {1000 * client_s / images:.1f}; "
        f"server {server:.2f} + client {client:.2f} = {server + client:.2f} of {cores_available()} cores busy"
    )
