"""A closed-loop load generator: N callers, each sending its next request as soon as its last one is answered.

Requests are built from pre-encoded bytes before the clock starts, and one asyncio loop drives every caller, so the
client spends as little of the machine's CPU as a client can while it shares the cores with the server.
"""

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Send = Callable[[int], Awaitable[None]]


@dataclass
class LoadResult:
    requests_per_s: float
    latencies_ms: list[float]
    errors: int = 0
    first_error: str = ""


async def closed_loop(send: Send, variants: int, concurrency: int, warmup_s: float, duration_s: float) -> LoadResult:
    """Throughput counts requests answered inside the window; latency, requests both sent and answered inside it.

    `send(i)` sends request variant `i % variants`; callers take variants in turn so the mix is the same at every
    concurrency.
    """
    started = time.perf_counter()
    measure_from, stop_at = started + warmup_s, started + warmup_s + duration_s
    turns = itertools.count()
    latencies: list[float] = []
    answered = 0
    errors: list[str] = []

    async def caller() -> None:
        nonlocal answered
        while (sent := time.perf_counter()) < stop_at:
            try:
                await send(next(turns) % variants)
            except Exception as error:  # noqa: BLE001 - counted and reported; the run goes on
                errors.append(f"{type(error).__name__}: {error}")
                await asyncio.sleep(0.01)
                continue
            finished = time.perf_counter()
            if measure_from <= finished <= stop_at:
                answered += 1
                if sent >= measure_from:
                    latencies.append((finished - sent) * 1000)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return LoadResult(answered / duration_s, latencies, len(errors), errors[0] if errors else "")
