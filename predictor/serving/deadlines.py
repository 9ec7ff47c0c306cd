"""One deadline per request, shared by everything the request waits for.

`within(timeout_s)` runs a request under the shorter of the server's timeout (`--request-timeout-s`) and the gRPC
client's own deadline, which the gRPC servicer records with `client_deadline_in` (predictor/serving/kserve/). When
it passes, whatever the request still awaits is cancelled: an image waiting in the batcher leaves its queue, a query
waiting for a search worker leaves the search pool, and the request fails with `RequestTimedOut` (504 /
DEADLINE_EXCEEDED). Work already running in a thread cannot be cancelled; `remaining_s()` is how long a blocking
Milvus call may take, so that it ends by the same deadline.

Deadlines are event-loop times (`loop.time()`), read and compared only on the event loop.
"""

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator

from predictor.errors import ClientGaveUp, RequestTimedOut

__all__ = ["client_deadline_in", "deadline", "remaining_s", "within"]

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("request_deadline", default=None)
_client_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("client_deadline", default=None)


def client_deadline_in(seconds: float | None) -> None:
    """Record, for the rest of this task, that the client gives up `seconds` from now (None: it set no deadline)."""
    if seconds is not None:
        _client_deadline.set(asyncio.get_running_loop().time() + max(seconds, 0.0))


def deadline() -> float | None:
    """The running request's deadline in event-loop time, or None outside a request."""
    return _deadline.get()


def remaining_s() -> float | None:
    """Seconds the running request has left (at least a millisecond), or None outside a request."""
    end = _deadline.get()
    if end is None:
        return None
    return max(end - asyncio.get_running_loop().time(), 0.001)


@contextlib.asynccontextmanager
async def within(timeout_s: float) -> AsyncIterator[None]:
    """Run the block under the request's deadline; `RequestTimedOut` if it has not finished by then."""
    now = asyncio.get_running_loop().time()
    server_end = now + timeout_s
    client_end = _client_deadline.get()
    by_client = client_end is not None and client_end < server_end
    end = client_end if by_client else server_end
    token = _deadline.set(end)
    try:
        async with asyncio.timeout_at(end) as scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise
        if by_client and client_end is not None:
            raise ClientGaveUp(
                f"the request did not finish within the client's deadline ({client_end - now:.3g} s)"
            ) from None
        raise RequestTimedOut(f"the request did not finish within {timeout_s:g} s (--request-timeout-s)") from None
    finally:
        _deadline.reset(token)
