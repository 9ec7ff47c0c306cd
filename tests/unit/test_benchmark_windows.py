"""The CLIP benchmark's served windows hold whole rounds of its callers, however slow the model is on this machine."""

import pytest

from benchmarks.clip_bench import CONCURRENCY, served_windows


@pytest.mark.parametrize("per_s", [0.5, 4.4, 50.0, 5000.0])
def test_one_round_warms_up_and_the_window_holds_four(per_s):
    warmup_s, duration_s = served_windows(per_s, quick=False)
    round_s = CONCURRENCY / per_s
    assert warmup_s >= round_s and duration_s >= 4 * round_s
    assert warmup_s >= 2.0 and duration_s >= 8.0, "a fast model still gets the usual windows"


def test_a_quick_run_still_lets_one_round_finish_inside_the_window():
    warmup_s, duration_s = served_windows(4.4, quick=True)
    assert warmup_s >= CONCURRENCY / 4.4 and duration_s >= CONCURRENCY / 4.4
    assert served_windows(5000.0, quick=True) == (1.0, 3.0)
