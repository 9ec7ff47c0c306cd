"""What both served models share: the backbone, the device batcher, the image input, and one tracked request path.

A request runs `preprocess` (parse, 400 on anything wrong) -> `predict` -> `postprocess` (the response), all inside
one tracked span, so the request latency metric and the request log line cover the whole request, and under one
deadline (deadlines.py), so no request waits longer than `--request-timeout-s`.
"""

import asyncio
import time
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
from kserve import Model
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferRequest

from predictor.embedding.backbone import Backbone
from predictor.errors import ModelUnavailable
from predictor.observability.inference_statistics import (
    InferenceStatistics,
    add_to_current_request,
    queued_in_current_request,
)
from predictor.observability.metrics import ServingMetrics
from predictor.observability.request_tracking import tracked
from predictor.protocol import inference
from predictor.serving import deadlines
from predictor.serving.batching import MicroBatcher
from predictor.serving.image_preparation import PreparedImage, prepare_images
from predictor.serving.settings import ServeSettings


class ImageModel(Model):
    def __init__(self, name: str, backbone: Backbone, settings: ServeSettings) -> None:
        super().__init__(name)
        self.backbone = backbone
        self.settings = settings
        self.metrics = ServingMetrics(name, backbone.spec.version)
        self.statistics = InferenceStatistics(name, backbone.spec.version)
        self._batcher: MicroBatcher | None = None

    @property
    def version(self) -> str:
        return self.backbone.spec.version

    def start_batcher(self, batch_function: Callable[[list[np.ndarray]], Collection[Any]]) -> None:
        """One micro-batcher per model, running `batch_function` on the backbone's device thread."""
        self._batcher = MicroBatcher(
            batch_function,
            max_batch_size=self.settings.max_batch_size,
            max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
            executor=self.backbone.executor,
            on_batch=self._observe_batch,
            on_wait=queued_in_current_request,
            whole_sizes=self.backbone.whole_batches,
        )

    @property
    def batcher(self) -> MicroBatcher:
        """The model's micro-batcher; a request that reaches a model that has not loaded is refused as unavailable."""
        if self._batcher is None:
            raise ModelUnavailable(f"model {self.name} is not loaded")
        return self._batcher

    def _observe_batch(self, size: int, queue_wait_seconds: list[float]) -> None:
        self.metrics.observe_batch(size, queue_wait_seconds)
        self.statistics.executed()

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": inference.IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def images_in(self, parsed: Any) -> int:
        """How many images a parsed request carries (for its log line)."""
        return 0

    def queries_in(self, parsed: Any) -> int:
        """How many queries a parsed request carries (the statistics extension's inference count)."""
        return self.images_in(parsed)

    async def __call__(
        self,
        body: dict | InferRequest,
        headers: dict[str, str] | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> tuple[Any, dict[str, str]]:
        if verb != InferenceVerb.PREDICT:
            raise NotImplementedError(f"{self.name} only predicts")
        with (
            tracked(self.metrics, self.name, self.version, body, headers) as request,
            self.statistics.request() as timing,
        ):
            async with deadlines.within(self.settings.request_timeout_s):
                with timing.stage("compute_input"):
                    parsed = await self.preprocess(body, headers)
                request.images = self.images_in(parsed)
                timing.inferences = self.queries_in(parsed)
                with timing.stage("compute_infer"):
                    result = await self.predict(parsed, headers)
                with timing.stage("compute_output"):
                    return await self.postprocess(result, headers), {}

    async def run_on_device(self, images: list[bytes]) -> tuple[list[PreparedImage], list[Any]]:
        """Decode and preprocess in worker threads, then each image's share of a batch from the device thread."""
        started = time.perf_counter_ns()
        prepared = await prepare_images(
            images, self.settings.limits, self.backbone.spec.preprocessing, self.metrics, self.backbone.device
        )
        add_to_current_request("compute_input", time.perf_counter_ns() - started)
        if len(prepared) == 1:
            # Awaiting the batcher directly (no gather) resumes this request as soon as its batch is done.
            results = [await self.batcher.submit(prepared[0].pixels)]
        else:
            results = await asyncio.gather(*(self.batcher.submit(image.pixels) for image in prepared))
        self.metrics.count_images(len(results))
        return prepared, list(results)
