"""Stopping without dropping requests: SIGTERM turns readiness false at once, then the server drains.

On the first SIGTERM (or SIGINT):

1. readiness answers 503 from that moment (`/v2/health/ready`, `/v2/models/{name}/ready`, gRPC ServerReady), while
   liveness stays 200, so nothing restarts a pod that is shutting down on purpose;
2. for `--drain-seconds` the server keeps serving everything, new requests included: load balancers that poll
   readiness, or learn of the shutdown late, still have somewhere to send what they already routed here;
3. then both transports stop taking new work at once (the HTTP listener closes, gRPC sends GOAWAY), requests in flight
   get up to `--shutdown-grace-seconds` to finish, and the process exits 0.

A second signal during the pause skips the rest of it; a third SIGINT is uvicorn's forced exit. On Kubernetes the chart
puts the pause before SIGTERM instead, as a preStop hook, so that endpoints update before the signal arrives; the
server then needs no pause of its own.

The signal handlers are installed once the HTTP server runs (`install()` is a startup hook), because uvicorn sets its
own when it starts serving: ours wrap them, and hand over to them when the pause ends.
"""

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Handler = Callable[[int, FrameType | None], object]


class Drain:
    def __init__(self, pause_s: float, stop_grpc: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if pause_s < 0:
            raise ValueError(f"--drain-seconds must not be negative, got {pause_s}")
        self.pause_s = pause_s
        self.draining = False
        self._stop_grpc = stop_grpc
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Handler] = {}
        self._tasks: set[asyncio.Task] = set()

    @property
    def _running_loop(self) -> asyncio.AbstractEventLoop:
        # The signal handlers that need it are installed by install(), which sets it first.
        if self._loop is None:
            raise RuntimeError("Drain.install() has not run")
        return self._loop

    def install(self) -> None:
        """Take over SIGTERM and SIGINT from the running HTTP server; call it from the event loop's thread."""
        self._loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            previous = signal.signal(sig, self._on_signal)
            self._previous[sig] = previous if callable(previous) else (lambda _sig, _frame: None)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._stopping:
            self._previous[sig](sig, frame)
            return
        if self.draining:
            logger.info("second %s: ending the drain pause now", signal.Signals(sig).name)
            self._running_loop.call_soon_threadsafe(self._stop, sig)
            return
        self.draining = True
        logger.info(
            "%s: readiness is false; serving for %.3g s more, then finishing requests in flight",
            signal.Signals(sig).name,
            self.pause_s,
        )
        loop = self._running_loop
        loop.call_soon_threadsafe(loop.call_later, self.pause_s, self._stop, sig)

    def _stop(self, sig: int) -> None:
        if self._stopping:
            return
        self._stopping = True
        logger.info("drain pause over: no new requests; waiting for the ones in flight")
        task = self._running_loop.create_task(self._stop_grpc())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._previous[sig](sig, None)
