"""Decode and preprocess a request's images in worker threads, timing each stage; a bad image names its position.

On CUDA, the request's plain JPEGs are decoded together on the GPU first (see imaging/device_decoding.py); the
rest, and any the GPU refuses, are decoded one per worker thread on the CPU.
"""

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from predictor.errors import InvalidRequest
from predictor.imaging.decoding import ImageLimits, InvalidImage, Preprocessing, decode_image, preprocess
from predictor.imaging.device_decoding import prepare_on_device, wants_device_decode
from predictor.observability.metrics import ServingMetrics
from predictor.observability.thread_names import name_os_thread

# Decoding fills whatever CPU the forward pass leaves. At equal priority, a handful of busy decode threads take cores
# from torch's intra-op threads in the middle of a layer, and the whole forward pass waits at the next barrier.
DECODE_NICENESS = 10

_decode_executor: concurrent.futures.ThreadPoolExecutor | None = None
_decode_executor_lock = threading.Lock()


def _start_decode_thread() -> None:
    name_os_thread()
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + DECODE_NICENESS)


def decode_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The worker threads that decode images: as many as the usable cores plus two, at a lower CPU priority than the
    device thread."""
    global _decode_executor
    with _decode_executor_lock:
        if _decode_executor is None:
            _decode_executor = concurrent.futures.ThreadPoolExecutor(
                len(os.sched_getaffinity(0)) + 2, thread_name_prefix="decode", initializer=_start_decode_thread
            )
        return _decode_executor


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray
    decode_s: float
    preprocess_s: float


def prepare_image(data: bytes, limits: ImageLimits, preprocessing: Preprocessing) -> PreparedImage:
    started = time.perf_counter()
    image = decode_image(data, limits, preprocessing)
    decoded = time.perf_counter()
    pixels = preprocess(image, preprocessing)
    return PreparedImage(pixels, decoded - started, time.perf_counter() - decoded)


def _prepare_on_device(
    images: list[bytes], limits: ImageLimits, preprocessing: Preprocessing, device: torch.device
) -> dict[int, PreparedImage]:
    started = time.perf_counter()
    pixels = prepare_on_device(images, limits, preprocessing, device)
    # One call decodes and crops them all; each image is charged its share, all of it as decoding.
    share = (time.perf_counter() - started) / max(len(pixels), 1)
    return {position: PreparedImage(crop, share, 0.0) for position, crop in pixels.items()}


async def prepare_images(
    images: list[bytes],
    limits: ImageLimits,
    preprocessing: Preprocessing,
    metrics: ServingMetrics,
    device: torch.device | None = None,
) -> list[PreparedImage]:
    """Every image's pixels in request order. `device` is the model's: on CUDA, JPEGs are decoded there."""
    loop = asyncio.get_running_loop()
    on_device: dict[int, PreparedImage] = {}
    if device is not None and wants_device_decode(device):
        on_device = await loop.run_in_executor(
            decode_executor(), _prepare_on_device, images, limits, preprocessing, device
        )

    async def one(position: int, data: bytes) -> PreparedImage:
        prepared = on_device.get(position)
        if prepared is None:
            try:
                prepared = await loop.run_in_executor(decode_executor(), prepare_image, data, limits, preprocessing)
            except InvalidImage as error:
                raise InvalidRequest(f"image {position}: {error}") from None
        metrics.observe_stage("decode", prepared.decode_s)
        metrics.observe_stage("preprocess", prepared.preprocess_s)
        return prepared

    results = await asyncio.gather(
        *(one(position, data) for position, data in enumerate(images)), return_exceptions=True
    )
    prepared = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        prepared.append(result)
    return prepared
