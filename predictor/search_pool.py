"""Milvus searches in a small pool of their own, so that the device thread never waits for a round trip.

Queries with equal search options that are waiting at the same moment share one search call: a request's queries are
submitted together, the queries of one embedding batch arrive in the same turn of the event loop, and whatever queues
while every worker is busy goes in the next call. Nothing waits on purpose, so a lone query is searched at once.
"""

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

Key = TypeVar("Key", bound=Hashable)
SearchFunction = Callable[[Any, np.ndarray], Sequence[Any]]


@dataclass
class _Waiting:
    vectors: np.ndarray
    future: asyncio.Future


class SearchPool(Generic[Key]):
    """`await pool.search(options, vectors)` gives one result per row of `vectors`, from `search(options, vectors)`
    run in a worker thread, maybe together with other callers' vectors that have the same options."""

    def __init__(self, search: SearchFunction, workers: int, max_queries_per_call: int = 64) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if max_queries_per_call < 1:
            raise ValueError(f"max_queries_per_call must be at least 1, got {max_queries_per_call}")
        self._search = search
        self._workers = workers
        self._max_queries = max_queries_per_call
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="search")
        self._waiting: dict[Key, list[_Waiting]] = {}
        self._running = 0
        self._dispatch_pending = False

    async def search(self, key: Key, vectors: np.ndarray) -> list[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.setdefault(key, []).append(_Waiting(vectors, future))
        if not self._dispatch_pending:
            # Dispatching on the next turn lets callers woken in this one (one embedding batch) join the same call.
            self._dispatch_pending = True
            loop.call_soon(self._dispatch, loop)
        return await future

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._dispatch_pending = False
        while self._running < self._workers and self._waiting:
            key = next(iter(self._waiting))
            queue = self._waiting[key]
            group: list[_Waiting] = []
            rows = 0
            while queue and (not group or rows + len(queue[0].vectors) <= self._max_queries):
                waiting = queue.pop(0)
                if not waiting.future.done():
                    group.append(waiting)
                    rows += len(waiting.vectors)
            if not queue:
                del self._waiting[key]
            if not group:
                continue
            self._running += 1
            vectors = group[0].vectors if len(group) == 1 else np.concatenate([w.vectors for w in group])
            call = loop.run_in_executor(self._executor, self._search, key, vectors)
            call.add_done_callback(functools.partial(self._finished, loop, group))

    def _finished(self, loop: asyncio.AbstractEventLoop, group: list[_Waiting], call: asyncio.Future) -> None:
        self._running -= 1
        error = asyncio.CancelledError() if call.cancelled() else call.exception()
        results = None if error else call.result()
        if results is not None and len(results) != sum(len(w.vectors) for w in group):
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
