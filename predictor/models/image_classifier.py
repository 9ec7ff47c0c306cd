"""KServe model `image-classifier`: ImageNet-1k labels above a confidence threshold, with a latency breakdown."""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse
from torchvision.models import EfficientNet_B0_Weights

from predictor.backbone import Backbone
from predictor.batching import MicroBatcher
from predictor.config import ServeSettings
from predictor.metrics import ServingMetrics
from predictor.models import protocol
from predictor.models.pixels import PreparedImage, prepare_images
from predictor.models.tracking import tracked

# torchvision ships the ImageNet-1k class names with every ImageNet weights enum; no download involved.
IMAGENET_LABELS: list[str] = list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])
OUTPUTS = ["labels", "confidences"]
DEFAULT_THRESHOLD = 0.5
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class Classification:
    probabilities: np.ndarray
    inference_s: float


@dataclass(frozen=True)
class ClassifyResult:
    request: InferRequest | None
    prepared: list[PreparedImage]
    predictions: list[list[tuple[str, float]]]
    inference_s: list[float]
    outputs: list[str]


def labels_above(probabilities: np.ndarray, threshold: float, top_k: int) -> list[tuple[str, float]]:
    order = np.argsort(probabilities)[::-1][:top_k]
    return [(IMAGENET_LABELS[i], float(probabilities[i])) for i in order if probabilities[i] >= threshold]


class ImageClassifierModel(Model):
    def __init__(self, name: str, backbone: Backbone, settings: ServeSettings) -> None:
        super().__init__(name)
        self.backbone = backbone
        self.settings = settings
        self.metrics = ServingMetrics(name, backbone.spec.version)
        self._batcher: MicroBatcher | None = None

    def load(self) -> bool:
        self.backbone.load()
        self._batcher = MicroBatcher(
            self._classify,
            max_batch_size=self.settings.max_batch_size,
            max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
            executor=self.backbone.executor,
            on_batch=self.metrics.observe_batch,
        )
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": protocol.IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "confidences", "datatype": "FP32", "shape": [-1, -1]},
        ]

    def _classify(self, pixels: list[np.ndarray]) -> list[Classification]:
        started = time.perf_counter()
        with self.metrics.stage("embed"):
            probabilities = self.backbone.run(np.stack(pixels), with_probabilities=True).probabilities
        elapsed = time.perf_counter() - started
        return [Classification(row, elapsed) for row in probabilities]

    def _parse(self, payload: dict | InferRequest) -> tuple[list[bytes], list[float], int, list[str]]:
        max_images = self.settings.limits.max_images
        if isinstance(payload, InferRequest):
            parameters = protocol.request_parameters(payload)
            images = protocol.images_from_v2(payload, max_images)
            threshold = protocol.float_parameter(parameters, "confidence_threshold", DEFAULT_THRESHOLD, 0.0, 1.0)
            top_k = protocol.int_parameter(parameters, "top_k", DEFAULT_TOP_K, 1, len(IMAGENET_LABELS))
            outputs = protocol.requested_output_names(payload, OUTPUTS, OUTPUTS)
            return images, [threshold] * len(images), top_k, outputs
        instances = protocol.v1_instances(payload, max_images)
        parameters = protocol.v1_parameters(payload)
        top_k = protocol.int_parameter(parameters, "top_k", DEFAULT_TOP_K, 1, len(IMAGENET_LABELS))
        images, thresholds = [], []
        for position, instance in enumerate(instances):
            if not isinstance(instance, dict) or "image_base64" not in instance:
                raise InvalidInput(
                    f'instance {position}: expected {{"image_base64": "...", "confidence_threshold": x}}'
                )
            images.append(protocol.image_from_v1_value(instance["image_base64"], position))
            thresholds.append(protocol.float_parameter(instance, "confidence_threshold", DEFAULT_THRESHOLD, 0.0, 1.0))
        return images, thresholds, top_k, OUTPUTS

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> ClassifyResult:
        with tracked(self.metrics, self.name, self.backbone.spec.version, payload, headers) as tracker:
            images, thresholds, top_k, outputs = self._parse(payload)
            tracker.images = len(images)
            prepared = await prepare_images(
                images, self.settings.limits, self.backbone.spec.preprocessing, self.metrics, self.backbone.device
            )
            classifications = await asyncio.gather(*(self._batcher.submit(image.pixels) for image in prepared))
            self.metrics.count_images(len(classifications))
        predictions = [
            labels_above(result.probabilities, threshold, top_k)
            for result, threshold in zip(classifications, thresholds, strict=True)
        ]
        return ClassifyResult(
            payload if isinstance(payload, InferRequest) else None,
            prepared,
            predictions,
            [result.inference_s for result in classifications],
            outputs,
        )

    async def postprocess(
        self, result: ClassifyResult, headers: dict[str, str] | None = None, response_headers: dict | None = None
    ) -> dict | InferResponse:
        if result.request is None:
            return {
                "predictions": [
                    {
                        "predictions": [{"label": label, "confidence": confidence} for label, confidence in labels],
                        "latency_ms": {
                            "decode": round(image.decode_s * 1000, 3),
                            "preprocess": round(image.preprocess_s * 1000, 3),
                            "inference": round(inference_s * 1000, 3),
                        },
                    }
                    for labels, image, inference_s in zip(
                        result.predictions, result.prepared, result.inference_s, strict=True
                    )
                ]
            }
        width = max((len(labels) for labels in result.predictions), default=0)
        tensors = {
            "labels": lambda: protocol.text_tensor([[label for label, _ in row] for row in result.predictions], width),
            "confidences": lambda: protocol.number_tensor([[c for _, c in row] for row in result.predictions], width),
        }
        return protocol.v2_response(self.name, result.request, result.outputs, tensors)
