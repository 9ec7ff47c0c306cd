"""Milvus searches in a small pool of their own, so that the device thread never waits for a round trip.

Queries with equal search options that are waiting at the same moment share one search call: a request's queries are
submitted together, the queries of one embedding batch arrive in the same turn of the event loop, and whatever queues
while every worker is busy goes in the next call. Nothing waits on purpose, so a lone query is searched at once.

A Milvus that stalls cannot pile work up without bound:

- every call carries a timeout, the latest deadline of the requests it serves, so a worker is never held longer than
  the request timeout (a blocking Milvus call cannot be cancelled, but its gRPC deadline ends it);
- a caller that stops waiting (its request timed out) leaves the queue at once;
- at most `max_waiting_queries` queries wait behind busy workers; one more is refused at once with
  `SearchBacklogFull` (503 / UNAVAILABLE) rather than queued to time out.
"""

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from predictor.errors import SearchBacklogFull
from predictor.observability.thread_names import name_os_thread

Key = TypeVar("Key", bound=Hashable)
# search(key, vectors, timeout_s): one result per row; timeout_s None waits as long as Milvus takes.
SearchFunction = Callable[[Any, np.ndarray, float | None], Sequence[Any]]
# A call whose callers all have less time left than this would only time out.
_MIN_CALL_TIMEOUT_S = 0.001


@dataclass(eq=False)  # identity: one caller's entry, found again to take it out
class _Waiting:
    vectors: np.ndarray
    future: asyncio.Future
    deadline: float | None  # event-loop time


class SearchPool(Generic[Key]):
    """`await pool.search(options, vectors, deadline)` gives one result per row of `vectors`, from
    `search(options, vectors, timeout_s)` run in a worker thread, maybe together with other callers' vectors that
    have the same options."""

    def __init__(
        self, search: SearchFunction, workers: int, max_queries_per_call: int = 64, max_waiting_queries: int = 1024
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if max_queries_per_call < 1:
            raise ValueError(f"max_queries_per_call must be at least 1, got {max_queries_per_call}")
        if max_waiting_queries < max_queries_per_call:
            raise ValueError(
                f"max_waiting_queries ({max_waiting_queries}) must hold at least one call's worth "
                f"(max_queries_per_call {max_queries_per_call})"
            )
        self._search = search
        self._workers = workers
        self._max_queries = max_queries_per_call
        self._max_waiting = max_waiting_queries
        self._executor = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="search", initializer=name_os_thread
        )
        self._waiting: dict[Key, list[_Waiting]] = {}
        self._waiting_queries = 0
        self._running = 0
        self._dispatch_pending = False

    @property
    def waiting_queries(self) -> int:
        """Queries queued behind busy workers (not counting the calls that are running)."""
        return self._waiting_queries

    async def search(self, key: Key, vectors: np.ndarray, deadline: float | None = None) -> list[Any]:
        """`deadline` is the event-loop time (`loop.time()`) after which the caller no longer needs the answer."""
        if self._running >= self._workers and self._waiting_queries + len(vectors) > self._max_waiting:
            raise SearchBacklogFull(
                f"{self._waiting_queries} queries are already waiting for Milvus, which answers slower than they "
                "arrive; retry later"
            )
        loop = asyncio.get_running_loop()
        waiting = _Waiting(vectors, loop.create_future(), deadline)
        self._waiting.setdefault(key, []).append(waiting)
        self._waiting_queries += len(vectors)
        if not self._dispatch_pending:
            # Dispatching on the next turn lets callers woken in this one (one embedding batch) join the same call.
            self._dispatch_pending = True
            loop.call_soon(self._dispatch, loop)
        try:
            return await waiting.future
        except asyncio.CancelledError:
            self._forget(key, waiting)
            raise

    def _forget(self, key: Key, waiting: _Waiting) -> None:
        queue = self._waiting.get(key)
        if queue and waiting in queue:
            queue.remove(waiting)
            self._waiting_queries -= len(waiting.vectors)
            if not queue:
                del self._waiting[key]

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._dispatch_pending = False
        while self._running < self._workers and self._waiting:
            key = next(iter(self._waiting))
            queue = self._waiting[key]
            group: list[_Waiting] = []
            rows = 0
            while queue and (not group or rows + len(queue[0].vectors) <= self._max_queries):
                waiting = queue.pop(0)
                self._waiting_queries -= len(waiting.vectors)
                if not waiting.future.done():
                    group.append(waiting)
                    rows += len(waiting.vectors)
            if not queue:
                del self._waiting[key]
            if not group:
                continue
            timeout_s = self._call_timeout(loop, group)
            if timeout_s is not None and timeout_s < _MIN_CALL_TIMEOUT_S:
                continue  # every caller's deadline has passed; their own timeouts answer them
            self._running += 1
            vectors = group[0].vectors if len(group) == 1 else np.concatenate([w.vectors for w in group])
            call = loop.run_in_executor(self._executor, self._search, key, vectors, timeout_s)
            call.add_done_callback(functools.partial(self._finished, loop, group))

    @staticmethod
    def _call_timeout(loop: asyncio.AbstractEventLoop, group: list[_Waiting]) -> float | None:
        deadlines = [waiting.deadline for waiting in group if waiting.deadline is not None]
        if len(deadlines) < len(group):
            return None
        return max(deadlines) - loop.time()

    def _finished(self, loop: asyncio.AbstractEventLoop, group: list[_Waiting], call: asyncio.Future) -> None:
        self._running -= 1
        error = asyncio.CancelledError() if call.cancelled() else call.exception()
        results = [] if error else call.result()
        if not error and len(results) != sum(len(w.vectors) for w in group):
            error = RuntimeError(f"search returned {len(results)} results for {sum(len(w.vectors) for w in group)}")
        start = 0
        for waiting in group:
            count = len(waiting.vectors)
            if not waiting.future.done():
                if error:
                    waiting.future.set_exception(error)
                else:
                    waiting.future.set_result(list(results[start : start + count]))
            start += count
        self._dispatch(loop)
