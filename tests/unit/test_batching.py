import asyncio
import threading
import time

import pytest

from predictor.serving.batching import MicroBatcher


class RecordingBatchFunction:
    """Doubles each item, fails items that are negative, and records the batches it saw and on which thread."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.called_at: list[float] = []
        self.delay_s = delay_s

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.called_at.append(time.perf_counter())
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [ValueError(f"bad item {item}") if item < 0 else item * 2 for item in items]


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_items_share_a_batch_and_each_caller_gets_its_own_result_in_order():
    fn = RecordingBatchFunction()
    batcher = MicroBatcher(fn, max_batch_size=64, max_delay_s=0.05)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(20)))

    assert run(main()) == [i * 2 for i in range(20)]
    assert len(fn.batches) == 1 and fn.batches[0] == list(range(20))


def test_batches_never_exceed_max_batch_size():
    fn = RecordingBatchFunction(delay_s=0.01)
    batcher = MicroBatcher(fn, max_batch_size=4, max_delay_s=0.02)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert run(main()) == [i * 2 for i in range(10)]
    assert max(len(batch) for batch in fn.batches) == 4
    assert sum(len(batch) for batch in fn.batches) == 10


def test_a_bad_item_fails_only_its_own_caller():
    fn = RecordingBatchFunction()
    batcher = MicroBatcher(fn, max_batch_size=8, max_delay_s=0.05)

    async def main():
        return await asyncio.gather(batcher.submit(1), batcher.submit(-1), batcher.submit(3), return_exceptions=True)

    good, bad, other = run(main())
    assert (good, other) == (2, 6)
    assert isinstance(bad, ValueError) and "bad item -1" in str(bad)
    assert len(fn.batches) == 1


def test_a_failing_batch_fails_its_callers_and_the_batcher_keeps_serving():
    calls = []

    def flaky(items):
        calls.append(items)
        if len(calls) == 1:
            raise ConnectionError("index down")
        return items

    batcher = MicroBatcher(flaky, max_batch_size=8, max_delay_s=0.01)

    async def main():
        first = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        second = await batcher.submit(3)
        return first, second

    first, second = run(main())
    assert all(isinstance(result, ConnectionError) for result in first)
    assert second == 3


def test_a_lone_item_waits_no_longer_than_the_delay_bound():
    fn = RecordingBatchFunction()
    delay_s = 0.05
    batcher = MicroBatcher(fn, max_batch_size=32, max_delay_s=delay_s)

    async def main():
        submitted = time.perf_counter()
        result = await batcher.submit(5)
        return submitted, result

    submitted, result = run(main())
    waited = fn.called_at[0] - submitted
    assert result == 10
    assert delay_s * 0.8 <= waited < delay_s + 0.1, f"waited {waited * 1000:.1f} ms for a {delay_s * 1000} ms bound"


def test_a_full_batch_goes_without_waiting_for_the_delay():
    fn = RecordingBatchFunction()
    batcher = MicroBatcher(fn, max_batch_size=4, max_delay_s=5.0)

    async def main():
        started = time.perf_counter()
        await asyncio.gather(*(batcher.submit(i) for i in range(4)))
        return time.perf_counter() - started

    assert run(main()) < 1.0


def test_batch_function_runs_off_the_event_loop_thread():
    fn = RecordingBatchFunction()
    batcher = MicroBatcher(fn, max_batch_size=4, max_delay_s=0.0)

    async def main():
        await batcher.submit(1)
        return threading.current_thread().name

    loop_thread = run(main())
    assert fn.threads and loop_thread not in fn.threads


def test_observer_sees_batch_size_and_queue_waits():
    seen = []
    batcher = MicroBatcher(
        RecordingBatchFunction(), max_batch_size=8, max_delay_s=0.02, on_batch=lambda n, waits: seen.append((n, waits))
    )

    async def main():
        await asyncio.gather(*(batcher.submit(i) for i in range(3)))

    run(main())
    assert seen[0][0] == 3 and len(seen[0][1]) == 3 and all(w >= 0 for w in seen[0][1])


@pytest.mark.parametrize(
    ("size", "delay", "message"),
    [(0, 0.01, "max_batch_size must be at least 1"), (4, -1, "max_delay_s must not be negative")],
)
def test_bad_configuration_is_refused_with_a_clear_message(size, delay, message):
    with pytest.raises(ValueError, match=message):
        MicroBatcher(lambda items: items, max_batch_size=size, max_delay_s=delay)


def test_after_a_wait_in_vain_the_next_lone_item_goes_at_once():
    fn = RecordingBatchFunction()
    delay_s = 0.05
    batcher = MicroBatcher(fn, max_batch_size=32, max_delay_s=delay_s)

    async def main():
        waits = []
        for item in (1, 2, 3):
            submitted = time.perf_counter()
            await batcher.submit(item)
            waits.append(fn.called_at[-1] - submitted)
        return waits

    first, second, third = run(main())
    assert first >= delay_s * 0.8, "a fresh batcher waits for company"
    assert second < delay_s * 0.5 and third < delay_s * 0.5, f"waited {second * 1000:.1f} and {third * 1000:.1f} ms"
    assert fn.batches == [[1], [2], [3]]


def test_lone_items_wait_for_company_again_once_items_arrive_together():
    fn = RecordingBatchFunction()
    delay_s = 0.05
    batcher = MicroBatcher(fn, max_batch_size=32, max_delay_s=delay_s)

    async def main():
        await batcher.submit(1)  # waits in vain
        await asyncio.gather(*(batcher.submit(i) for i in (2, 3, 4)))  # arrive together
        submitted = time.perf_counter()
        lone, late = await asyncio.gather(batcher.submit(5), _after(delay_s / 5, batcher.submit(6)))
        return fn.called_at[-1] - submitted, (lone, late)

    waited, results = run(main())
    assert results == (10, 12)
    assert fn.batches[1] == [2, 3, 4]
    assert fn.batches[2] == [5, 6], "the lone item waited and the late one joined it"
    assert waited < delay_s + 0.1


async def _after(seconds: float, awaitable):
    await asyncio.sleep(seconds)
    return await awaitable


def test_a_caller_that_gives_up_while_queued_is_never_run():
    fn = RecordingBatchFunction(delay_s=0.05)
    batcher = MicroBatcher(fn, max_batch_size=1, max_delay_s=0.0)

    async def main():
        first = asyncio.ensure_future(batcher.submit(1))
        second = asyncio.ensure_future(batcher.submit(2))
        third = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0.01)
        second.cancel()
        return await first, await third

    assert run(main()) == (2, 6)
    assert fn.batches == [[1], [3]]


def test_a_batch_is_cut_to_the_largest_whole_size_and_the_rest_go_first_into_the_next():
    fn = RecordingBatchFunction()
    batcher = MicroBatcher(fn, max_batch_size=32, max_delay_s=0.0, whole_sizes=(8, 12, 64))

    async def main():
        everyone = await asyncio.gather(*(batcher.submit(i) for i in range(14)))
        alone = await asyncio.gather(*(batcher.submit(i) for i in range(100, 105)))
        return everyone, alone

    everyone, alone = run(main())
    assert everyone == [i * 2 for i in range(14)] and alone == [i * 2 for i in range(100, 105)]
    assert fn.batches == [list(range(12)), [12, 13], list(range(100, 105))], "below every whole size: not cut"
