"""What both served models share: the backbone, the device batcher, the image input, and one tracked request path.

A request runs `preprocess` (parse, 400 on anything wrong) -> `predict` -> `postprocess` (the response), all inside
one tracked span, so the request latency metric and the request log line cover the whole request, and under one
deadline (deadlines.py), so no request waits longer than `--request-timeout-s`.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from kserve import Model
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferRequest

from predictor import deadlines
from predictor.backbone import Backbone
from predictor.batching import MicroBatcher
from predictor.config import ServeSettings
from predictor.metrics import ServingMetrics
from predictor.models import protocol
from predictor.models.pixels import PreparedImage, prepare_images
from predictor.models.tracking import tracked


class ImageModel(Model):
    def __init__(self, name: str, backbone: Backbone, settings: ServeSettings) -> None:
        super().__init__(name)
        self.backbone = backbone
        self.settings = settings
        self.metrics = ServingMetrics(name, backbone.spec.version)
        self._batcher: MicroBatcher | None = None

    @property
    def version(self) -> str:
        return self.backbone.spec.version

    def start_batcher(self, batch_function: Callable[[list[np.ndarray]], Sequence[Any]]) -> None:
        """One micro-batcher per model, running `batch_function` on the backbone's device thread."""
        self._batcher = MicroBatcher(
            batch_function,
            max_batch_size=self.settings.max_batch_size,
            max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
            executor=self.backbone.executor,
            on_batch=self.metrics.observe_batch,
        )

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": protocol.IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def images_in(self, parsed: Any) -> int:
        """How many images a parsed request carries (for its log line)."""
        return 0

    async def __call__(
        self,
        body: dict | InferRequest,
        headers: dict[str, str] | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> tuple[Any, dict[str, str]]:
        if verb != InferenceVerb.PREDICT:
            raise NotImplementedError(f"{self.name} only predicts")
        with tracked(self.metrics, self.name, self.version, body, headers) as request:
            async with deadlines.within(self.settings.request_timeout_s):
                parsed = await self.preprocess(body, headers)
                request.images = self.images_in(parsed)
                result = await self.predict(parsed, headers)
                return await self.postprocess(result, headers), {}

    async def run_on_device(self, images: list[bytes]) -> tuple[list[PreparedImage], list[Any]]:
        """Decode and preprocess in worker threads, then each image's share of a batch from the device thread."""
        prepared = await prepare_images(
            images, self.settings.limits, self.backbone.spec.preprocessing, self.metrics, self.backbone.device
        )
        if len(prepared) == 1:
            # Awaiting the batcher directly (no gather) resumes this request as soon as its batch is done.
            results = [await self._batcher.submit(prepared[0].pixels)]
        else:
            results = await asyncio.gather(*(self._batcher.submit(image.pixels) for image in prepared))
        self.metrics.count_images(len(results))
        return prepared, list(results)
