"""End to end: the real `image-search serve` process, the naive server and the LitServe peer, driven by the same
load generator."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.clients import grpc_sender, litserve_sender, naive_sender, rest_sender
from benchmarks.loadgen import Send, closed_loop
from benchmarks.stats import PEER, Row
from benchmarks.thread_cpu import cores_available, cores_busy, cpu_by_stage, cpu_of_process_tree, describe_cpu
from harness.predictor_server import REPO_ROOT, free_port, run_cli, run_predictor, stop_process, wait_until

SEARCH_MODEL = "image-search"
CONCURRENCY = (1, 8, 32)
BATCH_REQUEST_IMAGES = 32


@dataclass(frozen=True)
class Timing:
    warmup_s: float = 2.0
    duration_s: float = 8.0


SenderFactory = Callable[[], AbstractAsyncContextManager[Send]]


def index_catalogue(catalogue_dir: Path, milvus_uri: str) -> None:
    result = run_cli("index", str(catalogue_dir), "--milvus-uri", milvus_uri)
    if result.returncode != 0:
        raise RuntimeError(f"indexing the catalogue failed:\n{result.stderr[-4000:]}")


def server_counters(http_url: str) -> dict[str, float]:
    """Sums and counts of the search model's batch-size and stage histograms, from the server's /metrics."""
    counters: dict[str, float] = {}
    text = httpx.get(f"{http_url}/metrics", timeout=5.0).text
    for family in text_string_to_metric_families(text):
        if family.name not in ("image_search_batch_size_images", "image_search_stage_duration_seconds"):
            continue
        for sample in family.samples:
            if sample.labels.get("model") != SEARCH_MODEL or not sample.name.endswith(("_sum", "_count")):
                continue
            key = sample.name.rsplit("_", 1)[-1]
            what = sample.labels.get("stage", "batch")
            counters[f"{what}_{key}"] = counters.get(f"{what}_{key}", 0.0) + sample.value
    return counters


def describe_server_work(before: dict[str, float], after: dict[str, float]) -> str:
    """Mean batch size and mean time per stage over one row, from the difference of two scrapes."""

    def mean(what: str) -> float | None:
        count = after.get(f"{what}_count", 0.0) - before.get(f"{what}_count", 0.0)
        return (after.get(f"{what}_sum", 0.0) - before.get(f"{what}_sum", 0.0)) / count if count else None

    parts = []
    if (batch := mean("batch")) is not None:
        parts.append(f"mean batch {batch:.1f}")
    images = after.get("batch_sum", 0.0) - before.get("batch_sum", 0.0)
    searches = after.get("search_count", 0.0) - before.get("search_count", 0.0)
    if images:
        parts.append(f"{searches / images:.2f} Milvus searches per image")
    for stage in ("decode", "preprocess", "embed", "search"):
        if (seconds := mean(stage)) is not None:
            parts.append(f"{stage} {seconds * 1000:.1f} ms")
    return ", ".join(parts)


def measure_row(
    group: str,
    name: str,
    factory: SenderFactory,
    variants: int,
    concurrency: int,
    images_per_request: int,
    timing: Timing,
    metrics_url: str | None = None,
    server_pid: int | None = None,
    process_tree: bool = False,
) -> Row:
    """`server_pid`'s threads are read by stage; with `process_tree`, it and the processes under it as one figure."""

    async def go():
        async with factory() as send:
            return await closed_loop(send, variants, concurrency, timing.warmup_s, timing.duration_s)

    read_cpu = cpu_of_process_tree if process_tree else cpu_by_stage
    before = server_counters(metrics_url) if metrics_url else {}
    cpu_before = read_cpu(server_pid) if server_pid else {}
    client_before, started = os.times(), time.monotonic()
    result = asyncio.run(go())
    wall_s, client_after = time.monotonic() - started, os.times()
    cpu_after = read_cpu(server_pid) if server_pid else {}
    cpu = describe_cpu(
        cpu_before,
        cpu_after,
        # The warm-up's requests are in the CPU time too.
        result.requests_per_s * images_per_request * wall_s,
        wall_s,
        (client_after.user + client_after.system) - (client_before.user + client_before.system),
    )
    work = describe_server_work(before, server_counters(metrics_url)) if metrics_url else ""
    work = "; ".join(part for part in (work, cpu) if part)
    row = Row(
        group,
        name,
        result.requests_per_s * images_per_request,
        result.latencies_ms,
        concurrency=concurrency,
        images_per_request=images_per_request,
        server_cores=cores_busy(cpu_before, cpu_after, wall_s),
        cores=cores_available(),
    )
    row.notes = work
    if result.errors:
        row.notes = f"{result.errors} failed requests, first: {result.first_error[:300]}; {work}"
    print(
        f"  {name:<34} {row.per_s:7.1f} images/s  p50 {row.p50 or 0:7.1f} ms  p99 {row.p99 or 0:7.1f} ms"
        + (f"  ({row.notes})" if row.notes else ""),
        flush=True,
    )
    return row


def measure_server(
    milvus_uri: str,
    workdir: Path,
    images: list[bytes],
    timing: Timing,
    extra_args: tuple[str, ...] = (),
    concurrency_levels: tuple[int, ...] = CONCURRENCY,
) -> list[Row]:
    """gRPC and REST rows at each concurrency, then one row of many images per request."""
    rows = []
    variants = len(images)
    with run_predictor(milvus_uri, workdir, *extra_args) as server:
        # What a pod serves at full speed: the network compiled in the background, once it is swapped in.
        from benchmarks.cold_start import wait_for_compiled

        wait_for_compiled(server)
        factories: dict[str, SenderFactory] = {
            "gRPC": lambda: grpc_sender(server.grpc_address, images),
            "REST binary": lambda: rest_sender(server.http_url, images),
        }
        for transport, factory in factories.items():
            for concurrency in concurrency_levels:
                name = f"server {transport}, c={concurrency}"
                rows.append(
                    measure_row(
                        "server", name, factory, variants, concurrency, 1, timing, server.http_url, server.process.pid
                    )
                )
        batch = BATCH_REQUEST_IMAGES
        rows.append(
            measure_row(
                "server-batch",
                f"server REST binary, {batch} img/request, c=2",
                lambda: rest_sender(server.http_url, images, batch),
                variants,
                2,
                batch,
                timing,
                server.http_url,
                server.process.pid,
            )
        )
        return rows


@contextlib.contextmanager
def run_peer_server(
    module: str, milvus_uri: str, workdir: Path, *extra_args: str, timeout_s: float = 180
) -> Iterator[tuple[str, int]]:
    """`python -m MODULE --port P --milvus-uri URI ...` until it stops; yields its URL and pid once /health is 200.

    It runs in a session of its own, so that whatever of it outlives its main process is stopped with it."""
    port = free_port()
    log_path = workdir / f"{module.rsplit('.', 1)[-1]}-{port}.log"
    command = [sys.executable, "-m", module, "--port", str(port), "--milvus-uri", milvus_uri, *extra_args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=dict(os.environ), start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(url, process, log_path, timeout_s, "/health")
        yield url, process.pid
    finally:
        stop_process(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def measure_naive(
    milvus_uri: str,
    workdir: Path,
    images: list[bytes],
    timing: Timing,
    concurrency_levels: tuple[int, ...] = CONCURRENCY,
    device: str = "auto",
) -> list[Row]:
    with run_peer_server("benchmarks.naive_server", milvus_uri, workdir, "--device", device) as (url, pid):
        return [
            measure_row(
                "naive",
                f"naive FastAPI, c={c}",
                lambda: naive_sender(url, images),
                len(images),
                c,
                1,
                timing,
                server_pid=pid,
                process_tree=True,
            )
            for c in concurrency_levels
        ]


def measure_litserve(
    milvus_uri: str,
    workdir: Path,
    images: list[bytes],
    timing: Timing,
    concurrency_levels: tuple[int, ...] = CONCURRENCY,
    device: str = "auto",
) -> list[Row]:
    """The LitServe peer (benchmarks/litserve_server.py) at each concurrency; its CPU is that of all its processes."""
    with run_peer_server("benchmarks.litserve_server", milvus_uri, workdir, "--device", device) as (url, pid):
        return [
            measure_row(
                PEER,
                f"LitServe peer, c={c}",
                lambda: litserve_sender(url, images),
                len(images),
                c,
                1,
                timing,
                server_pid=pid,
                process_tree=True,
            )
            for c in concurrency_levels
        ]
