"""Decode and preprocess a request's images in worker threads, timing each stage; a bad image names its position."""

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from kserve.errors import InvalidInput

from predictor.images import ImageLimits, InvalidImage, Preprocessing, decode_image, resize_and_crop
from predictor.metrics import ServingMetrics


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray
    decode_s: float
    preprocess_s: float


def prepare_image(data: bytes, limits: ImageLimits, preprocessing: Preprocessing) -> PreparedImage:
    started = time.perf_counter()
    image = decode_image(data, limits, draft_size=preprocessing.resize_shorter_side)
    decoded = time.perf_counter()
    pixels = resize_and_crop(image, preprocessing)
    return PreparedImage(pixels, decoded - started, time.perf_counter() - decoded)


async def prepare_images(
    images: list[bytes], limits: ImageLimits, preprocessing: Preprocessing, metrics: ServingMetrics
) -> list[PreparedImage]:
    async def one(position: int, data: bytes) -> PreparedImage:
        try:
            prepared = await asyncio.to_thread(prepare_image, data, limits, preprocessing)
        except InvalidImage as error:
            raise InvalidInput(f"image {position}: {error}") from None
        metrics.observe_stage("decode", prepared.decode_s)
        metrics.observe_stage("preprocess", prepared.preprocess_s)
        return prepared

    results = await asyncio.gather(
        *(one(position, data) for position, data in enumerate(images)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
