"""`make soak`: a long loopback load on a real server and a real Milvus server, to show nothing leaks or drifts.

python -m benchmarks soak                      # 32 callers for 10 minutes
python -m benchmarks soak --duration-s 180     # a shorter run

Callers send good and bad requests, mixed, over REST (binary data) and gRPC, through the same load generator and
tritonclient senders as `make bench`. The run is cut into windows; it reports every window's throughput and p99,
the server's resident memory at the end of each, and three verdicts:

- no unexpected errors: every good request answered, every bad one refused with 400 / INVALID_ARGUMENT;
- p99 of the last window against the first;
- server RSS growth from the first window to the last, under 5%: RSS is sampled every second and each window is
  summed up by its median, since one sample rises and falls by a few percent as batches come and go.

It exits 1 when there were unexpected errors or RSS grew by 5% or more.
"""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.clients import grpc_sender, rest_sender
from benchmarks.e2e import index_catalogue
from benchmarks.loadgen import Send, closed_loop
from benchmarks.workload import build_workload
from harness.milvus_server import run_milvus_server
from harness.predictor_server import run_predictor
from harness.process_memory import MIB, rss_bytes

RESULTS_DIR = Path(__file__).parent / "results"
RSS_GROWTH_TARGET = 0.05
# Of every ten requests: four good over REST, four good over gRPC, one bad over each.
MIX = ("rest", "grpc", "rest", "grpc", "bad-rest", "rest", "grpc", "rest", "grpc", "bad-grpc")


class UnexpectedAnswer(RuntimeError):
    """A bad request that was served, or one refused with anything but a client error."""


@dataclass
class Window:
    index: int
    seconds: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    unexpected_errors: int
    first_error: str
    server_rss_mib: float  # the median of the window's samples
    server_rss_max_mib: float


def bad_images(images: list[bytes]) -> list[bytes]:
    """What a broken client sends: truncated files and text, each refused with a client error."""
    return [image[: len(image) // 3] for image in images[::2]] + [b"not an image, just some words"]


def refused_as_bad_input(send: Send) -> Send:
    async def send_bad(variant: int) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            await send(variant)
        except InferenceServerException as error:
            if str(error.status()) in ("400", "StatusCode.INVALID_ARGUMENT"):
                return
            raise UnexpectedAnswer(f"a bad request was refused with {error.status()}: {error}") from None
        raise UnexpectedAnswer("a bad request was served")

    return send_bad


@contextlib.asynccontextmanager
async def mixed_sender(http_url: str, grpc_address: str, images: list[bytes]) -> AsyncIterator[Send]:
    broken = bad_images(images)
    async with (
        rest_sender(http_url, images) as rest,
        grpc_sender(grpc_address, images) as grpc,
        rest_sender(http_url, broken) as bad_rest,
        grpc_sender(grpc_address, broken) as bad_grpc,
    ):
        senders = {
            "rest": rest,
            "grpc": grpc,
            "bad-rest": refused_as_bad_input(bad_rest),
            "bad-grpc": refused_as_bad_input(bad_grpc),
        }

        async def send(variant: int) -> None:
            kind = MIX[variant % len(MIX)]
            pool = len(broken) if kind.startswith("bad") else len(images)
            await senders[kind]((variant // len(MIX)) % pool)

        yield send


class RssSampler:
    """The server's RSS once a second, in a thread of its own, so that the load's event loop never waits for it."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pid, interval_s), daemon=True)

    def _run(self, pid: int, interval_s: float) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, LookupError):
                self.samples.append(rss_bytes(pid) / MIB)
            self._stop.wait(interval_s)

    def take(self) -> list[float]:
        taken, self.samples = self.samples, []
        return taken or [float("nan")]

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def soak(
    http_url: str, grpc_address: str, pid: int, images: list[bytes], args: argparse.Namespace
) -> tuple[float, list[Window]]:
    window_s = args.duration_s / args.windows
    variants = len(MIX) * len(images)
    windows: list[Window] = []
    async with mixed_sender(http_url, grpc_address, images) as send:
        with RssSampler(pid) as rss:
            await closed_loop(send, variants, args.concurrency, 0.0, args.warmup_s)
            warm_rss = statistics.median(rss.take())
            print(f"warm-up done ({args.warmup_s:.0f} s): server RSS {warm_rss:.0f} MiB", flush=True)
            for index in range(args.windows):
                windows.append(await measure_window(send, variants, index, window_s, rss, args))
    return warm_rss, windows


async def measure_window(
    send: Send, variants: int, index: int, window_s: float, rss: RssSampler, args: argparse.Namespace
) -> Window:
    started = time.perf_counter()
    result = await closed_loop(send, variants, args.concurrency, 0.0, window_s)
    latencies = result.latencies_ms or [float("nan")]
    samples = rss.take()
    window = Window(
        index=index,
        seconds=round(time.perf_counter() - started, 1),
        requests=len(result.latencies_ms),
        requests_per_s=round(result.requests_per_s, 1),
        p50_ms=round(float(np.percentile(latencies, 50)), 1),
        p99_ms=round(float(np.percentile(latencies, 99)), 1),
        unexpected_errors=result.errors,
        first_error=result.first_error[:300],
        server_rss_mib=round(statistics.median(samples), 1),
        server_rss_max_mib=round(max(samples), 1),
    )
    print(
        f"  window {index + 1:>2}/{args.windows}: {window.requests_per_s:6.1f} req/s"
        f"  p50 {window.p50_ms:7.1f} ms  p99 {window.p99_ms:7.1f} ms"
        f"  unexpected errors {window.unexpected_errors}  server RSS {window.server_rss_mib:.0f} MiB"
        f" (max {window.server_rss_max_mib:.0f})" + (f"  ({window.first_error})" if window.first_error else ""),
        flush=True,
    )
    return window


def summarise(warm_rss_mib: float, windows: list[Window]) -> dict:
    errors = sum(window.unexpected_errors for window in windows)
    growth = (windows[-1].server_rss_mib - windows[0].server_rss_mib) / windows[0].server_rss_mib
    return {
        "unexpected_errors": errors,
        "requests": sum(window.requests for window in windows),
        "p99_first_ms": windows[0].p99_ms,
        "p99_last_ms": windows[-1].p99_ms,
        "p99_last_over_first": round(windows[-1].p99_ms / windows[0].p99_ms, 3),
        "rss_warm_up_mib": round(warm_rss_mib, 1),
        "rss_first_window_mib": windows[0].server_rss_mib,
        "rss_last_window_mib": windows[-1].server_rss_mib,
        "rss_growth": round(growth, 4),
        "passed": errors == 0 and growth < RSS_GROWTH_TARGET,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration-s", type=float, default=600.0, help="Measured time, after the warm-up.")
    parser.add_argument("--concurrency", type=int, default=32, help="Callers, each with one request in flight.")
    parser.add_argument("--windows", type=int, default=10, help="Windows the measured time is cut into.")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="Load before measuring starts.")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Where the JSON record goes.")


def run(args: argparse.Namespace) -> int:
    if args.duration_s <= 0 or args.windows < 2 or args.concurrency < 1 or args.warmup_s < 0:
        raise SystemExit("soak: --duration-s must be positive, --windows at least 2, --concurrency at least 1")
    with tempfile.TemporaryDirectory(prefix="image-search-soak-") as tmp:
        workdir = Path(tmp)
        workload = build_workload(workdir)
        with run_milvus_server(workdir / "milvus") as milvus_uri:
            index_catalogue(workload.catalogue_dir, milvus_uri)
            with run_predictor(milvus_uri, workdir) as server:
                print(
                    f"soak: {args.concurrency} callers for {args.warmup_s:.0f} s + {args.duration_s:.0f} s against "
                    f"{server.http_url} and {server.grpc_address} (Milvus server at {milvus_uri})",
                    flush=True,
                )
                warm_rss, windows = asyncio.run(
                    soak(server.http_url, server.grpc_address, server.process.pid, workload.images, args)
                )
                log_lines = len(server.log().splitlines())
    summary = summarise(warm_rss, windows)
    print(
        f"\nunexpected errors: {summary['unexpected_errors']} of {summary['requests']} requests\n"
        f"p99: {summary['p99_first_ms']:.1f} ms in the first window, {summary['p99_last_ms']:.1f} ms in the last "
        f"({summary['p99_last_over_first']:.2f}x)\n"
        f"server RSS (window medians): {summary['rss_first_window_mib']:.0f} MiB in the first window after the "
        f"warm-up, {summary['rss_last_window_mib']:.0f} MiB in the last "
        f"({summary['rss_growth'] * 100:+.1f}%, target under {RSS_GROWTH_TARGET * 100:.0f}%)\n"
        f"{'PASSED' if summary['passed'] else 'FAILED'}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "settings": {key: str(value) for key, value in vars(args).items()},
        "workload": workload.describe(),
        "mix": list(MIX),
        "server_log_lines": log_lines,
        "summary": summary,
        "windows": [asdict(window) for window in windows],
    }
    path = args.out / f"soak-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"record: {path}")
    return 0 if summary["passed"] else 1
