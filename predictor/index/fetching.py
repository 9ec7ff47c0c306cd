"""Reading a catalogue's images ahead of the model: a bounded number of reads in flight, results in listing order.

Object stores answer each read in tens of milliseconds but serve many at once; a run that read one object after the
other would leave the model idle most of the time. Reads run in their own threads while the caller decodes and
embeds what has arrived; at most `window` reads are in flight or waiting to be taken, so memory stays bounded.
"""

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from predictor.observability.thread_names import name_os_thread

T = TypeVar("T")

__all__ = ["prefetched"]


def prefetched(
    items: Iterable[T], read: Callable[[T], bytes], workers: int, window: int
) -> Iterator[tuple[T, bytes | Exception]]:
    """(item, its bytes) in the order of `items`; a read that failed gives its exception instead, for the caller to
    report or raise. Leaving the loop early cancels the reads not yet started."""
    if workers < 1 or window < 1:
        raise ValueError(f"workers and window must be at least 1, got {workers} and {window}")

    def attempt(item: T) -> bytes | Exception:
        try:
            return read(item)
        except Exception as error:  # noqa: BLE001 - handed to the caller, which decides what is fatal
            return error

    pending: deque[tuple[T, Future]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch", initializer=name_os_thread)
    try:
        source = iter(items)
        for item in source:
            pending.append((item, pool.submit(attempt, item)))
            if len(pending) >= window:
                break
        while pending:
            item, future = pending.popleft()
            result = future.result()
            following = next(source, None)
            if following is not None:
                pending.append((following, pool.submit(attempt, following)))
            yield item, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
