"""An async micro-batcher: concurrent callers' items coalesce into one call of a blocking batch function.

The batch function runs in one dedicated worker thread (the device's), never on the event loop. While a batch runs,
new items queue up and form the next batch, so batches grow with load and stay small when traffic is light.

An item that finds the device idle and the queue empty waits up to `max_delay_s` for company, but only while
waiting pays: after a wait in which nobody came, lone items go at once, until items arrive together again. One
caller at a time (the latency-bound case) so never pays the delay twice in a row.

A caller that stops waiting (its request timed out, or its client went away) takes its item out of the queue at once,
so the item holds no memory and no place in a batch, and is never run.

`whole_sizes` are the batch sizes the batch function runs fastest per item (the CPU network's larger compiled
slices). A batch of at least the smallest of them is cut to the largest that fits, and the rest go first into the
next batch: under load the device then runs only those sizes, instead of 12 + 2 or 8 + 4 + 1.
"""

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# A batch function returns one entry per item: the item's result, or an exception that fails only that item.
BatchFunction = Callable[[list[Item]], Collection[Result | BaseException]]
BatchObserver = Callable[[int, list[float]], None]
# Called in the caller's own context (its contextvars) with how long its item waited for its batch.
WaitObserver = Callable[[float], None]


@dataclass(eq=False)  # identity: one caller's entry, found again to take it out
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future
    enqueued_at: float
    started_at: float | None = None


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        batch_function: BatchFunction,
        max_batch_size: int,
        max_delay_s: float,
        executor: concurrent.futures.Executor | None = None,
        on_batch: BatchObserver | None = None,
        on_wait: WaitObserver | None = None,
        whole_sizes: tuple[int, ...] = (),
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_delay_s < 0:
            raise ValueError(f"max_delay_s must not be negative, got {max_delay_s}")
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.whole_sizes = tuple(sorted((size for size in whole_sizes if size <= max_batch_size), reverse=True))
        self._batch_function = batch_function
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batch")
        self._on_batch = on_batch
        self._on_wait = on_wait
        self._queue: collections.deque[_Pending] = collections.deque()
        # Made anew with each worker (submit), on the loop that runs it.
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._waiting_pays = True

    async def submit(self, item: Item) -> Result:
        """Queue one item and wait for its own result (or its own exception)."""
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")
        pending: _Pending = _Pending(item, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.append(pending)
        self._arrived.set()
        try:
            result = await pending.future
        except asyncio.CancelledError:
            if pending in self._queue:
                self._queue.remove(pending)
            raise
        if self._on_wait is not None and pending.started_at is not None:
            self._on_wait(pending.started_at - pending.enqueued_at)
        return result

    async def _next(self, deadline: float | None) -> _Pending | None:
        """The next queued item; None if none came by `deadline` (a `perf_counter` time; None waits for ever)."""
        while not self._queue:
            self._arrived.clear()
            remaining = None if deadline is None else deadline - time.perf_counter()
            if remaining is not None and remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return None
        return self._queue.popleft()

    async def _collect(self) -> list[_Pending]:
        first = await self._next(None)
        assert first is not None  # without a deadline, _next waits for an item
        batch = [first]
        deadline = first.enqueued_at + (self.max_delay_s if self._waiting_pays else 0.0)
        while len(batch) < self.max_batch_size:
            if self._queue:
                batch.append(self._queue.popleft())
                continue
            if deadline - time.perf_counter() <= 0:
                break
            pending = await self._next(deadline)
            if pending is None:
                # Waited the whole delay for nobody: the next lone item should not wait.
                self._waiting_pays = len(batch) > 1
                return self._cut(batch)
            batch.append(pending)
        if len(batch) > 1:
            self._waiting_pays = True
        return self._cut(batch)

    def _cut(self, batch: list[_Pending]) -> list[_Pending]:
        """`batch` cut to the largest whole size that fits; what is cut off goes back to the front of the queue."""
        keep = next((size for size in self.whole_sizes if size <= len(batch)), len(batch))
        self._queue.extendleft(reversed(batch[keep:]))
        return batch[:keep]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            # A caller that gave up while its item was being collected: drop it here.
            batch = [pending for pending in batch if not pending.future.done()]
            if not batch:
                continue
            started = time.perf_counter()
            for pending in batch:
                pending.started_at = started
            if self._on_batch is not None:
                self._on_batch(len(batch), [started - pending.enqueued_at for pending in batch])
            try:
                results = await loop.run_in_executor(
                    self._executor, self._batch_function, [pending.item for pending in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except Exception as error:  # noqa: BLE001 - a failed batch fails each of its callers, not the loop
                results = [error] * len(batch)
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
