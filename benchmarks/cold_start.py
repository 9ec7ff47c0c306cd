"""Cold start: a new server's time to ready and to the compiled network, and what it serves meanwhile.

A server turns ready on the eager network and compiles in the background (predictor.embedding.compilation). This part
starts one with an empty Inductor cache, as a new pod has, and loads it with 8 gRPC callers from the moment it is
ready: once while it compiles, once after the swap. Then it starts a second server on the same cache, as a restarted
container finds its emptyDir, and times its swap too.
"""

import asyncio
import re
import time
from pathlib import Path

import httpx

from benchmarks.clients import grpc_sender
from benchmarks.e2e import Timing
from benchmarks.loadgen import closed_loop
from benchmarks.stats import Row
from harness.predictor_server import RunningServer, run_predictor

CONCURRENCY = 8
SWAP_TIMEOUT_S = 600


def serving_compiled(http_url: str) -> bool:
    text = httpx.get(f"{http_url}/metrics", timeout=10).text
    return re.search(r'^image_search_network_compiled\{[^}]*tower="image"[^}]*\} 1\.0$', text, re.MULTILINE) is not None


def wait_for_compiled(server: RunningServer, timeout_s: float = SWAP_TIMEOUT_S) -> float:
    """Seconds until the server serves its compiled network (0 where it never will: compiling off or failed)."""
    started = time.monotonic()
    while not serving_compiled(server.http_url):
        log = server.log()
        loaded = next((line for line in log.splitlines() if "loaded " in line), "")
        if "network stays eager" in log or "; not compiled" in loaded:
            return 0.0
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"no compiled network after {timeout_s} s:\n{log[-3000:]}")
        time.sleep(0.2)
    return time.monotonic() - started


def _load(server: RunningServer, images: list[bytes], duration_s: float) -> Row:
    async def go():
        async with grpc_sender(server.grpc_address, images) as send:
            return await closed_loop(send, len(images), CONCURRENCY, 0.0, duration_s)

    result = asyncio.run(go())
    row = Row("cold-start", "", result.requests_per_s, result.latencies_ms, concurrency=CONCURRENCY)
    if result.errors:
        row.notes = f"{result.errors} failed requests, first: {result.first_error[:300]}"
    return row


def _swap_seconds(log: str) -> float | None:
    match = re.search(r"serving the compiled image network from now on, ([0-9.]+) s after load", log)
    return float(match.group(1)) if match else None


def measure(milvus_uri: str, workdir: Path, images: list[bytes], timing: Timing) -> tuple[list[Row], str]:
    """Rows under load during the compile and after the swap, and a table of the start-up times."""
    cache = workdir / "inductor-cold-start"
    env = {"IMAGE_SEARCH_COMPILE": "auto", "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    rows: list[Row] = []
    starts = []
    for label in ("empty cache (a new pod)", "warm cache (a restarted container)"):
        started = time.monotonic()
        with run_predictor(milvus_uri, workdir, env=env) as server:
            ready_s = time.monotonic() - started
            during = None
            if label.startswith("empty"):
                during = _load(server, images, timing.duration_s)
                during.name = f"gRPC c={CONCURRENCY}, while compiling"
                compiled_by_then = serving_compiled(server.http_url)
                during.notes = "; ".join(
                    part
                    for part in (during.notes, "the swap came inside this window" if compiled_by_then else "")
                    if part
                )
            to_compiled = wait_for_compiled(server)
            full_speed_s = time.monotonic() - started
            if during is not None:
                after = _load(server, images, timing.duration_s)
                after.name = f"gRPC c={CONCURRENCY}, after the swap"
                rows += [during, after]
                for row in (during, after):
                    print(
                        f"  {row.name:<34} {row.per_s:7.1f} images/s  p50 {row.p50 or 0:7.1f} ms"
                        f"  p99 {row.p99 or 0:7.1f} ms" + (f"  ({row.notes})" if row.notes else ""),
                        flush=True,
                    )
            swap = _swap_seconds(server.log())
            starts.append((label, ready_s, full_speed_s if to_compiled or swap else None, swap))
            print(f"  {label}: ready in {ready_s:.1f} s, compiled network serving after {full_speed_s:.1f} s")
    lines = [
        "Cold start (process start to ready, and to the compiled network)",
        f"  {'':<36} {'ready s':>8} {'full speed s':>13} {'compile after load s':>21}",
    ]
    for label, ready_s, full_s, swap in starts:
        full = f"{full_s:.1f}" if full_s is not None else "never"
        lines.append(f"  {label:<36} {ready_s:>8.1f} {full:>13} {swap if swap is not None else '-':>21}")
    return rows, "\n".join(lines)
