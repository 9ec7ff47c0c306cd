"""How many cores a server kept busy over a row: from its threads by stage, or from its whole process tree."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.thread_cpu import cores_busy, cpu_by_stage, cpu_of_process_tree, describe_cpu, stat_cpu_seconds

# Spends `BURN_S` of CPU, says so, and waits on its stdin: a child process whose CPU time is known.
BURN_S = 0.3
BURNER = f"import sys, time\nwhile time.process_time() < {BURN_S}: pass\nprint('burnt', flush=True)\nsys.stdin.read()\n"


def test_cores_busy_is_the_cpu_spent_between_two_readings_over_the_wall_time():
    before = {"forward": 10.0, "decode": 4.0, "event loop": 1.0}
    after = {"forward": 16.0, "decode": 7.0, "event loop": 2.0, "search": 0.5}
    assert cores_busy(before, after, wall_s=5.0) == pytest.approx((6.0 + 3.0 + 1.0 + 0.5) / 5.0)
    assert cores_busy({}, after, wall_s=5.0) is None, "no first reading (no /proc): no figure rather than a wrong one"


def test_a_process_tree_counts_its_children_cpu():
    child = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "burnt"
        own = sum(os.times()[:2])
        (total,) = cpu_of_process_tree(os.getpid()).values()
        assert total >= own + BURN_S * 0.9
        assert sum(cpu_of_process_tree(child.pid).values()) >= BURN_S * 0.9
    finally:
        child.stdin.close()
        child.wait(10)


def test_a_child_named_device_counts_as_the_forward_stage_and_another_child_does_not():
    named = "open('/proc/self/comm', 'w').write('device-process')\n"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", prefix + BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for prefix in (named, "")
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "burnt"
        # A device thread an earlier test started in this process counts too; the children add the named one alone.
        own = sum(
            stat_cpu_seconds((task / "stat").read_text())
            for task in Path("/proc/self/task").iterdir()
            if (task / "comm").read_text().startswith("device")
        )
        forward = cpu_by_stage(os.getpid()).get("forward", 0.0) - own
        assert BURN_S * 0.9 <= forward < 2 * BURN_S
    finally:
        for child in children:
            child.stdin.close()
            child.wait(10)


def test_a_process_that_has_ended_reads_as_nothing():
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(30)
    assert cpu_of_process_tree(ended.pid) == {}
    assert cpu_by_stage(ended.pid) == {}


def test_the_note_splits_the_busy_cores_between_server_and_client():
    before, after = {"all processes": 1.0}, {"all processes": 1.5}
    note = describe_cpu(before, after, images=10, wall_s=1.0, client_s=0.25)
    cores = len(os.sched_getaffinity(0))
    assert note.startswith("server CPU ms per image: all processes 50.0 (total 50.0); client 25.0;")
    assert note.endswith(f"server 0.50 + client 0.25 = 0.75 of {cores} cores busy")
    staged = describe_cpu({"forward": 1.0}, {"forward": 2.0, "decode": 0.5}, images=10, wall_s=2.0, client_s=0.0)
    assert "forward 100.0, decode 50.0, event loop 0.0, search 0.0, other 0.0 (total 150.0)" in staged
