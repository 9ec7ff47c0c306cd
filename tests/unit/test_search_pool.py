"""The search pool: searches off the event loop, grouped by equal options, bounded in number, failures shared."""

import asyncio
import threading
import time

import numpy as np
import pytest

from predictor.errors import SearchBacklogFull
from predictor.serving.search_pool import SearchPool


class RecordingSearch:
    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.timeouts: list[float | None] = []
        self.gate = gate
        self.running = 0
        self.most_running = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()
        self.delay_s = delay_s
        self.fail_on = fail_on

    def __call__(self, key: str, vectors: np.ndarray, timeout_s: float | None = None) -> list[str]:
        with self._lock:
            self.calls.append((key, len(vectors)))
            self.timeouts.append(timeout_s)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(self.delay_s)
            if self.gate is not None:
                self.gate.wait(10)
            if key == self.fail_on:
                raise RuntimeError(f"search with {key} failed")
            return [f"{key}:{row[0]:g}" for row in vectors]
        finally:
            with self._lock:
                self.running -= 1


async def until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.001)


def rows(*values: float) -> np.ndarray:
    return np.array([[value] for value in values], dtype=np.float32)


def test_callers_waiting_together_with_equal_options_share_one_search_and_get_their_own_rows():
    search = RecordingSearch()
    pool = SearchPool(search, workers=2)

    async def main():
        return await asyncio.gather(
            pool.search("a", rows(1, 2)),
            pool.search("b", rows(3)),
            pool.search("a", rows(4)),
            pool.search("b", rows(5)),
        )

    assert asyncio.run(main()) == [["a:1", "a:2"], ["b:3"], ["a:4"], ["b:5"]]
    assert sorted(search.calls) == [("a", 3), ("b", 2)]
    assert all(name.startswith("search") for name in search.threads)


def test_no_more_searches_run_at_once_than_workers_and_the_waiting_ones_merge():
    search = RecordingSearch(delay_s=0.05)
    pool = SearchPool(search, workers=2)

    async def main():
        return await asyncio.gather(*(pool.search("same", rows(i)) for i in range(10)))

    first_wave = asyncio.run(main())
    assert first_wave == [[f"same:{i}"] for i in range(10)]
    assert search.most_running <= 2 and len(search.calls) == 1


def test_a_group_is_bounded_in_size():
    search = RecordingSearch()
    pool = SearchPool(search, workers=1, max_queries_per_call=4)

    async def main():
        return await asyncio.gather(*(pool.search("k", rows(i, i)) for i in range(5)))

    asyncio.run(main())
    assert [count for _, count in search.calls] == [4, 4, 2]


def test_a_failed_search_fails_every_caller_of_that_group_only():
    search = RecordingSearch(fail_on="bad")
    pool = SearchPool(search, workers=2)

    async def main():
        return await asyncio.gather(
            pool.search("bad", rows(1)),
            pool.search("good", rows(2)),
            pool.search("bad", rows(3)),
            return_exceptions=True,
        )

    bad, good, also_bad = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and isinstance(also_bad, RuntimeError)
    assert good == ["good:2"]


def test_a_lone_search_is_not_delayed():
    search = RecordingSearch()
    pool = SearchPool(search, workers=1)

    async def main():
        started = time.perf_counter()
        await pool.search("k", rows(1))
        return time.perf_counter() - started

    assert asyncio.run(main()) < 0.5


def test_a_call_may_take_until_the_latest_deadline_of_the_callers_it_serves():
    search = RecordingSearch()
    pool = SearchPool(search, workers=1)

    async def main():
        now = asyncio.get_running_loop().time()
        await asyncio.gather(pool.search("k", rows(1), now + 2.0), pool.search("k", rows(2), now + 5.0))
        await pool.search("k", rows(3))

    asyncio.run(main())
    assert len(search.timeouts) == 2 and 4.0 < search.timeouts[0] <= 5.0
    assert search.timeouts[1] is None, "a caller without a deadline gets an unbounded call"


def test_a_caller_that_stops_waiting_leaves_the_queue_and_is_never_searched():
    gate = threading.Event()
    search = RecordingSearch(gate=gate)
    pool = SearchPool(search, workers=1)

    async def main():
        busy = asyncio.ensure_future(pool.search("busy", rows(1)))
        await until(lambda: search.running == 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.search("gave-up", rows(2, 3)), 0.05)
        left = pool.waiting_queries
        gate.set()
        await busy
        return left

    assert asyncio.run(main()) == 0
    assert [key for key, _ in search.calls] == ["busy"]


def test_queries_beyond_the_backlog_bound_are_refused_at_once_while_milvus_is_stuck():
    gate = threading.Event()
    search = RecordingSearch(gate=gate)
    pool = SearchPool(search, workers=1, max_queries_per_call=2, max_waiting_queries=4)

    async def main():
        stuck = asyncio.ensure_future(pool.search("k", rows(0)))
        await until(lambda: search.running == 1)
        waiting = [asyncio.ensure_future(pool.search("k", rows(i, i))) for i in (1, 2)]
        await until(lambda: pool.waiting_queries == 4)
        with pytest.raises(SearchBacklogFull, match="4 queries are already waiting for Milvus"):
            await pool.search("k", rows(9))
        gate.set()
        return await asyncio.gather(stuck, *waiting)

    assert asyncio.run(main()) == [["k:0"], ["k:1", "k:1"], ["k:2", "k:2"]]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="workers must be at least 1"):
        SearchPool(RecordingSearch(), workers=0)
    with pytest.raises(ValueError, match="must hold at least one call's worth"):
        SearchPool(RecordingSearch(), workers=1, max_queries_per_call=8, max_waiting_queries=4)
