"""The load generator's throughput reads a batching server's bursts of answers without depending on their phase."""

import pytest

from benchmarks.loadgen import EDGE_S, tapered_rate

BURST, PERIOD_S, WINDOW_S = 15, 0.7, 6.5  # a server at c=32 on 2 cores: a batch of 15 about every 0.7 s


def bursts(phase_s: float, end: float) -> list[float]:
    """Answer times of a server that finishes BURST requests every PERIOD_S from `phase_s` on, until past `end`."""
    return [phase_s + n * PERIOD_S + i * 0.001 for n in range(int(end / PERIOD_S) + 2) for i in range(BURST)]


def plain_rate(finished: list[float], start: float, end: float) -> float:
    return sum(start <= time <= end for time in finished) / (end - start)


def test_the_rate_of_bursts_does_not_depend_on_where_the_window_falls():
    true_rate = BURST / PERIOD_S
    phases = [i * PERIOD_S / 20 for i in range(20)]
    tapered = [tapered_rate(bursts(phase, 10.0 + WINDOW_S), 10.0, 10.0 + WINDOW_S, EDGE_S) for phase in phases]
    plain = [plain_rate(bursts(phase, 10.0 + WINDOW_S), 10.0, 10.0 + WINDOW_S) for phase in phases]
    assert max(abs(rate / true_rate - 1) for rate in tapered) < 0.02
    assert (max(tapered) - min(tapered)) / true_rate < 0.02
    # What the taper is for: a plain count gains or loses a whole burst with the phase.
    assert (max(plain) - min(plain)) / true_rate > 0.08


@pytest.mark.parametrize("window_s", [0.4, 3.0, 6.5, 60.0])
def test_a_steady_rate_reads_the_same_at_every_window_length(window_s):
    finished = [i / 100 for i in range(-500, int((window_s + 5) * 100))]  # one answer every 10 ms
    assert tapered_rate(finished, 0.0, window_s, EDGE_S) == pytest.approx(100.0, rel=0.03)


def test_no_answers_or_no_window_is_no_throughput():
    assert tapered_rate([], 0.0, 6.5, EDGE_S) == 0.0
    assert tapered_rate([1.0, 2.0], 5.0, 5.0, EDGE_S) == 0.0
