"""KServe model `image-classifier`: ImageNet-1k labels above a confidence threshold, with a latency breakdown.

It needs a package with an ImageNet classifier head (the bundled default, or any package of the architectures in
predictor/architectures). An open_clip package has no head: the classifier then refuses every request with a 400
that says so, and text queries to `image-search` are the way to ask such a model about words.
"""

import time
from dataclasses import dataclass

import numpy as np
from kserve.protocol.infer_type import InferRequest, InferResponse

from predictor.embedding.architectures import imagenet_labels
from predictor.errors import InvalidRequest
from predictor.models.base import ImageModel
from predictor.protocol import inference
from predictor.serving.image_preparation import PreparedImage
from predictor.serving.kserve.grpc_service import request_parameters

IMAGENET_LABELS: list[str] = imagenet_labels()
OUTPUTS = ["labels", "confidences"]
DEFAULT_THRESHOLD = 0.5
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class Classification:
    probabilities: np.ndarray
    inference_s: float


@dataclass(frozen=True)
class ClassifyRequest:
    v2: InferRequest | None
    images: list[bytes]
    thresholds: list[float]
    top_k: int
    outputs: list[str]


@dataclass(frozen=True)
class ClassifyResult:
    request: ClassifyRequest
    prepared: list[PreparedImage]
    predictions: list[list[tuple[str, float]]]
    inference_s: list[float]


def labels_above(probabilities: np.ndarray, threshold: float, top_k: int) -> list[tuple[str, float]]:
    order = np.argsort(probabilities)[::-1][:top_k]
    return [(IMAGENET_LABELS[i], float(probabilities[i])) for i in order if probabilities[i] >= threshold]


class ImageClassifierModel(ImageModel):
    def load(self) -> bool:
        self.backbone.load()
        self.start_batcher(self._classify)
        self.ready = True
        return self.ready

    def metadata_parameters(self) -> dict:
        """What the model metadata declares beyond the tensors: the request's parameters."""
        return {
            "confidence_threshold": {"type": "number", "default": DEFAULT_THRESHOLD, "minimum": 0.0, "maximum": 1.0},
            "top_k": {"type": "integer", "default": DEFAULT_TOP_K, "minimum": 1, "maximum": len(IMAGENET_LABELS)},
        }

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "confidences", "datatype": "FP32", "shape": [-1, -1]},
        ]

    def _classify(self, pixels: list[np.ndarray]) -> list[Classification]:
        started = time.perf_counter()
        probabilities = self.backbone.run(np.stack(pixels), with_probabilities=True).probabilities
        if probabilities is None:
            raise RuntimeError(f"{self.backbone.spec.architecture} gave no class probabilities")
        elapsed = time.perf_counter() - started
        self.metrics.observe_stage("embed", elapsed)
        return [Classification(row, elapsed) for row in probabilities]

    def images_in(self, parsed: ClassifyRequest) -> int:
        return len(parsed.images)

    async def preprocess(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> ClassifyRequest:
        spec = self.backbone.spec
        if spec.has_text_tower:
            raise InvalidRequest(
                f"model {self.name} classifies ImageNet-1k with a classifier head, and {spec.identity} is an "
                "open_clip package without one; search it by text with the image-search model's 'text' input"
            )
        max_images = self.settings.limits.max_images
        if isinstance(payload, InferRequest):
            parameters = request_parameters(payload)
            _, tensor = inference.v2_inputs(payload, [inference.IMAGE_INPUT])
            images = inference.images_from_tensor(tensor, max_images)
            threshold = inference.float_parameter(parameters, "confidence_threshold", DEFAULT_THRESHOLD, 0.0, 1.0)
            top_k = inference.int_parameter(parameters, "top_k", DEFAULT_TOP_K, 1, len(IMAGENET_LABELS))
            outputs = inference.requested_output_names(payload, OUTPUTS, OUTPUTS)
            return ClassifyRequest(payload, images, [threshold] * len(images), top_k, outputs)
        instances = inference.v1_instances(payload, max_images)
        parameters = inference.v1_parameters(payload)
        top_k = inference.int_parameter(parameters, "top_k", DEFAULT_TOP_K, 1, len(IMAGENET_LABELS))
        images, thresholds = [], []
        for position, instance in enumerate(instances):
            if not isinstance(instance, dict) or "image_base64" not in instance:
                raise InvalidRequest(
                    f'instance {position}: expected {{"image_base64": "...", "confidence_threshold": x}}'
                )
            images.append(inference.image_from_v1_value(instance["image_base64"], position))
            thresholds.append(inference.float_parameter(instance, "confidence_threshold", DEFAULT_THRESHOLD, 0.0, 1.0))
        return ClassifyRequest(None, images, thresholds, top_k, OUTPUTS)

    async def predict(self, request: ClassifyRequest, headers: dict[str, str] | None = None) -> ClassifyResult:
        prepared, classifications = await self.run_on_device(request.images)
        predictions = [
            labels_above(result.probabilities, threshold, request.top_k)
            for result, threshold in zip(classifications, request.thresholds, strict=True)
        ]
        return ClassifyResult(request, prepared, predictions, [result.inference_s for result in classifications])

    async def postprocess(
        self, result: ClassifyResult, headers: dict[str, str] | None = None, response_headers: dict | None = None
    ) -> dict | InferResponse:
        request = result.request
        if request.v2 is None:
            return {
                "model_version": self.version,
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
                ],
            }
        width = max((len(labels) for labels in result.predictions), default=0)
        tensors = {
            "labels": lambda: inference.text_tensor([[label for label, _ in row] for row in result.predictions], width),
            "confidences": lambda: inference.number_tensor([[c for _, c in row] for row in result.predictions], width),
        }
        return inference.v2_response(self.name, self.version, request.v2, request.outputs, tensors)
