"""The limit: decode, preprocess and forward in one process with no server in the way.

Decoding of the next batch overlaps the forward pass of the current one, as a server can do at best, so the limit
is a ceiling for the server and not a figure it could beat by pipelining.
"""

import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable

import numpy as np

from benchmarks.stats import Row
from predictor.embedding.backbone import Backbone
from predictor.embedding.model_package import default_spec
from predictor.imaging.decoding import ImageLimits, load_pixels

BATCH_SIZES = (1, 4, 8, 16, 32)


def load_backbone(device: str = "auto") -> Backbone:
    # At the precision the server picks (`--precision auto`), so the limit and the server compare like with like.
    backbone = Backbone(default_spec(), device, "auto", compile_mode="auto")
    backbone.load()
    backbone.warm_up()
    return backbone


def _lower_priority() -> None:
    """As the server's decode threads do: decoding gets the CPU the forward pass leaves."""
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + 10)


def _pixels_of(backbone: Backbone) -> Callable[[bytes], np.ndarray]:
    limits, preprocessing = ImageLimits(), backbone.spec.preprocessing
    return lambda data: load_pixels(data, limits, preprocessing)


def pipelined_throughput(backbone: Backbone, images: list[bytes], batch_size: int, min_seconds: float) -> float:
    """Images per second over at least `min_seconds` and one full pass of the images, after one warm batch."""
    pixels_of = _pixels_of(backbone)
    cursor = 0

    def next_batch() -> list[bytes]:
        nonlocal cursor
        batch = [images[(cursor + i) % len(images)] for i in range(batch_size)]
        cursor += batch_size
        return batch

    threads = len(os.sched_getaffinity(0)) + 2
    with concurrent.futures.ThreadPoolExecutor(threads, "decode", initializer=_lower_priority) as pool:
        backbone.run(np.stack(list(pool.map(pixels_of, next_batch()))))
        pending = [pool.submit(pixels_of, data) for data in next_batch()]
        done, started = 0, time.perf_counter()
        while True:
            batch = np.stack([future.result() for future in pending])
            pending = [pool.submit(pixels_of, data) for data in next_batch()]
            backbone.run(batch)
            done += batch_size
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds and done >= len(images):
                for future in pending:
                    future.cancel()
                return done / elapsed


def serial_throughput(backbone: Backbone, images: list[bytes], batch_size: int, min_seconds: float) -> float:
    """Decode a batch in this thread, then run it: the simplest loop, for reference next to the pipelined one."""
    pixels_of = _pixels_of(backbone)
    done, started, cursor = 0, time.perf_counter(), 0
    while True:
        batch = [images[(cursor + i) % len(images)] for i in range(batch_size)]
        cursor += batch_size
        backbone.run(np.stack([pixels_of(data) for data in batch]))
        done += batch_size
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds and done >= len(images):
            return done / elapsed


def single_image_latencies(backbone: Backbone, images: list[bytes], passes: int = 2) -> list[float]:
    """Milliseconds from encoded bytes to embedding for one image at a time."""
    pixels_of = _pixels_of(backbone)
    latencies = []
    for _ in range(passes):
        for data in images:
            started = time.perf_counter()
            backbone.run(pixels_of(data)[np.newaxis])
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def recheck(backbone: Backbone, images: list[bytes], batch_size: int, min_seconds: float) -> tuple[float, list[float]]:
    """The best batch size's throughput and single-image latencies again, later in the run."""
    return pipelined_throughput(backbone, images, batch_size, min_seconds), single_image_latencies(backbone, images, 1)


def measure_limit(
    backbone: Backbone, images: list[bytes], batch_sizes: tuple[int, ...] = BATCH_SIZES, min_seconds: float = 4.0
) -> tuple[list[Row], int]:
    """The scan over batch sizes, the best one's serial figure, and single-image latency; returns rows and best size."""
    rows = []
    for batch_size in batch_sizes:
        per_s = pipelined_throughput(backbone, images, batch_size, min_seconds)
        rows.append(Row("scan", f"in-process, batch {batch_size}", per_s, images_per_request=batch_size))
        print(f"  batch {batch_size:>3}: {per_s:6.1f} images/s", flush=True)
    best = max(rows, key=lambda row: row.per_s)
    best.group = "limit"
    best.notes = "decode of the next batch overlaps the forward pass"
    serial = serial_throughput(backbone, images, best.images_per_request, min_seconds)
    rows.append(
        Row(
            "scan",
            f"in-process, batch {best.images_per_request}, no overlap",
            serial,
            images_per_request=best.images_per_request,
            notes="decode, then forward, one after the other",
        )
    )
    rows.append(
        Row(
            "limit",
            "in-process, one image at a time",
            0.0,
            single_image_latencies(backbone, images, 1),
            concurrency=1,
            notes="latency reference for concurrency 1",
        )
    )
    latency_row = rows[-1]
    latency_row.per_s = 1000.0 / float(np.mean(latency_row.latencies_ms))
    return rows, best.images_per_request
