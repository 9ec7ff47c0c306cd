"""A micro-batcher: concurrent callers' items coalesce into one call of a blocking batch function.

The batch function runs in one dedicated worker thread (the device's), never on the event loop. While a batch runs,
new items queue up and form the next batch, so batches grow with load and stay small when traffic is light. The
device thread takes the next batch from the queue itself as soon as one is done: under load it never waits for the
event loop, which is busy parsing and answering requests, to hand it work. Only the results go back to the loop.

An item that finds the device idle and the queue empty waits up to `max_delay_s` for company, but only while
waiting pays: after a wait in which nobody came, lone items go at once, until items arrive together again. One
caller at a time (the latency-bound case) so never pays the delay twice in a row.

A caller that stops waiting (its request timed out, or its client went away) takes its item out of the queue at once,
so the item holds no memory and no place in a batch, and is never run.
"""

import asyncio
import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# A batch function returns one entry per item: the item's result, or an exception that fails only that item.
BatchFunction = Callable[[list[Item]], Collection[Result | BaseException]]
# Called on the device thread, before each batch runs, with its size and how long each of its items waited.
BatchObserver = Callable[[int, list[float]], None]
# Called in the caller's own context (its contextvars) with how long its item waited for its batch.
WaitObserver = Callable[[float], None]


@dataclass(eq=False)  # identity: one caller's entry, found again to take it out
class _Pending(Generic[Item]):
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
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_delay_s < 0:
            raise ValueError(f"max_delay_s must not be negative, got {max_delay_s}")
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._batch_function = batch_function
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batch")
        self._on_batch = on_batch
        self._on_wait = on_wait
        # Guards the queue, `_draining` and `_waiting_pays`; the device thread waits on it for company.
        self._arrived = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._draining = False
        self._waiting_pays = True

    async def submit(self, item: Item) -> Result:
        """Queue one item and wait for its own result (or its own exception)."""
        pending: _Pending = _Pending(item, asyncio.get_running_loop().create_future(), time.perf_counter())
        with self._arrived:
            self._queue.append(pending)
            self._arrived.notify()
            if not self._draining:
                self._draining = True
                self._executor.submit(self._drain)
        try:
            result = await pending.future
        except asyncio.CancelledError:
            with self._arrived:
                if pending in self._queue:
                    self._queue.remove(pending)
            raise
        if self._on_wait is not None and pending.started_at is not None:
            self._on_wait(pending.started_at - pending.enqueued_at)
        return result

    def _drain(self) -> None:
        """On the device thread: run one batch, then queue the next turn behind whatever else waits for the thread
        (the other model's batches, a compiled network's swap), so that none of it waits for a queue to empty."""
        # A caller that gave up while its batch was being collected: drop it here (a future's state is safe to read
        # from this thread; only its loop may change it).
        collected = self._collect()
        if not collected:
            return
        batch = [pending for pending in collected if not pending.future.done()]
        if not batch:
            self._next_turn()
            return
        started = time.perf_counter()
        for pending in batch:
            pending.started_at = started
        try:
            if self._on_batch is not None:
                self._on_batch(len(batch), [started - pending.enqueued_at for pending in batch])
            results: Sequence[Any] = list(self._batch_function([pending.item for pending in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except Exception as error:  # noqa: BLE001 - a failed batch fails each of its callers, not the batcher
            results = [error] * len(batch)
        _deliver(batch, results)
        self._next_turn()

    def _next_turn(self) -> None:
        with self._arrived:
            if not self._queue:
                self._draining = False
                return
        try:
            self._executor.submit(self._drain)
        except RuntimeError as error:  # the executor shut down under queued items: fail them, never strand them
            with self._arrived:
                stranded, self._draining = list(self._queue), False
                self._queue.clear()
            _deliver(stranded, [error] * len(stranded))

    def _collect(self) -> list[_Pending]:
        """The next batch: what is queued, plus what arrives while waiting pays; empty when nothing is queued."""
        with self._arrived:
            if not self._queue:
                self._draining = False
                return []
            batch = [self._queue.popleft()]
            deadline = batch[0].enqueued_at + (self.max_delay_s if self._waiting_pays else 0.0)
            while len(batch) < self.max_batch_size:
                if self._queue:
                    batch.append(self._queue.popleft())
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
                if not self._queue and time.perf_counter() >= deadline:
                    # Waited the whole delay for nobody: the next lone item should not wait.
                    self._waiting_pays = len(batch) > 1
                    return batch
            if len(batch) > 1:
                self._waiting_pays = True
            return batch


def _deliver(batch: list[_Pending], results: Sequence[Any]) -> None:
    """Hands each caller its result on the caller's own event loop, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Any]]] = {}
    for pending, result in zip(batch, results, strict=True):
        by_loop.setdefault(pending.future.get_loop(), []).append((pending, result))
    for loop, outcomes in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, outcomes)
        except RuntimeError:  # the loop closed: its callers are gone
            pass


def _settle(outcomes: list[tuple[_Pending, Any]]) -> None:
    for pending, result in outcomes:
        if pending.future.done():  # its caller gave up while the batch ran
            continue
        if isinstance(result, BaseException):
            pending.future.set_exception(result)
        else:
            pending.future.set_result(result)
