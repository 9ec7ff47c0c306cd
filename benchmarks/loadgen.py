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

# Longer than one batch of a loaded server on 2 cores (about 0.7 s at c=32), so each edge averages over a burst's phase.
EDGE_S = 1.0


@dataclass
class LoadResult:
    requests_per_s: float
    latencies_ms: list[float]
    errors: int = 0
    first_error: str = ""


async def closed_loop(send: Send, variants: int, concurrency: int, warmup_s: float, duration_s: float) -> LoadResult:
    """Throughput counts requests answered inside the window (`tapered_rate`); latency, requests both sent and answered
    inside it.

    `send(i)` sends request variant `i % variants`; callers take variants in turn so the mix is the same at every
    concurrency.
    """
    started = time.perf_counter()
    measure_from, stop_at = started + warmup_s, started + warmup_s + duration_s
    turns = itertools.count()
    latencies: list[float] = []
    answered: list[float] = []
    errors: list[str] = []

    async def caller() -> None:
        while (sent := time.perf_counter()) < stop_at:
            try:
                await send(next(turns) % variants)
            except Exception as error:  # noqa: BLE001 - counted and reported; the run goes on
                errors.append(f"{type(error).__name__}: {error}")
                await asyncio.sleep(0.01)
                continue
            finished = time.perf_counter()
            if measure_from <= finished <= stop_at:
                answered.append(finished)
                if sent >= measure_from:
                    latencies.append((finished - sent) * 1000)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    rate = tapered_rate(answered, measure_from, stop_at, EDGE_S)
    return LoadResult(rate, latencies, len(errors), errors[0] if errors else "")


def tapered_rate(finished: list[float], start: float, end: float, edge_s: float) -> float:
    """Answers per second in [start, end], each weighted by a window that ramps from 0 to 1 over `edge_s` at both ends.

    A batching server answers in bursts, one per batch. A plain count over the window gains or loses a whole burst
    by where its edges fall: a tenth of the figure at c=32 in a 6.5 s window. Ramped edges average over the bursts'
    phase; the window's weight is its length less one edge, so a steady rate reads the same either way.
    """
    if end <= start:
        return 0.0
    edge = min(edge_s, (end - start) / 4)
    weights = (min(1.0, (at - start) / edge, (end - at) / edge) for at in finished if start <= at <= end)
    return sum(weights) / (end - start - edge)
