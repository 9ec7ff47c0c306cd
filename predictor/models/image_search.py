"""KServe model `image-search`: images in, the most similar catalogue images out (V1 and V2, REST and gRPC)."""

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import Model
from kserve.protocol.infer_type import InferRequest, InferResponse

from predictor.backbone import Backbone
from predictor.batching import MicroBatcher
from predictor.config import ServeSettings
from predictor.index import Hit, ImageIndex, IndexMismatch, IndexNotReady, IndexUnavailable
from predictor.metrics import ServingMetrics, set_index_rows
from predictor.models import protocol
from predictor.models.pixels import prepare_images
from predictor.models.tracking import tracked

logger = logging.getLogger(__name__)

SEARCH_OUTPUTS = ["ids", "scores", "uris"]
ALL_OUTPUTS = SEARCH_OUTPUTS + ["embedding"]
HEALTH_TTL_S = 2.0
INDEX_ROWS_TTL_S = 30.0


@dataclass(frozen=True)
class SearchItem:
    pixels: np.ndarray
    top_k: int


@dataclass(frozen=True)
class SearchOutcome:
    embedding: np.ndarray
    hits: list[Hit]


@dataclass(frozen=True)
class SearchResult:
    request: InferRequest | None
    outcomes: list[SearchOutcome]
    top_k: int
    outputs: list[str]


class ImageSearchModel(Model):
    def __init__(self, name: str, backbone: Backbone, index: ImageIndex, settings: ServeSettings) -> None:
        super().__init__(name)
        self.backbone = backbone
        self.index = index
        self.settings = settings
        self.metrics = ServingMetrics(name, backbone.spec.version)
        self._batcher: MicroBatcher[SearchItem, SearchOutcome] | None = None
        self._healthy_until = 0.0
        self._healthy = False
        self._rows_counted_at = 0.0
        self.not_ready_reason: str | None = "not loaded yet"

    def load(self) -> bool:
        """Load the network and open this model's collection; a missing or empty one leaves us waiting, not failing.

        Waiting matters on Kubernetes: a canary with a new model starts before its indexing job has finished, and
        becomes ready by itself once the collection is there.
        """
        self.backbone.load()
        self.backbone.warm_up()
        self._batcher = MicroBatcher(
            self._embed_and_search,
            max_batch_size=self.settings.max_batch_size,
            max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
            executor=self.backbone.executor,
            on_batch=self.metrics.observe_batch,
        )
        self._open_index(mismatch_is_fatal=True)
        return self.ready

    def start(self) -> None:
        """KServe's default marks the model ready here; ours is ready only once its collection is open."""

    def _open_index(self, mismatch_is_fatal: bool = False) -> None:
        try:
            self.index.open_for_search()
        except IndexMismatch as error:
            if mismatch_is_fatal:
                raise
            self.ready = False
            self.not_ready_reason = str(error)
            return
        except (IndexNotReady, IndexUnavailable) as error:
            self.ready = False
            self.not_ready_reason = str(error)
            logger.warning("%s is not ready: %s", self.name, error)
            return
        self._refresh_index_rows()
        sample = self.index.sample_vectors()
        if len(sample):
            self.metrics.set_reference_centroid(sample.mean(axis=0))
        self.not_ready_reason = None
        self.ready = True
        logger.info("%s searches %s (%s)", self.name, self.index.collection, self.index.identity)

    async def healthy(self) -> bool:
        """Ready only while this model's collection is searchable; checked at most every couple of seconds."""
        now = time.monotonic()
        if now < self._healthy_until:
            return self._healthy
        self._healthy_until = now + HEALTH_TTL_S
        if not self.ready:
            await asyncio.to_thread(self._open_index)
            self._healthy = self.ready
        elif await asyncio.to_thread(self.index.ping):
            self._healthy = True
            self.not_ready_reason = None
            if now - self._rows_counted_at > INDEX_ROWS_TTL_S:
                await asyncio.to_thread(self._refresh_index_rows)
        else:
            self._healthy = False
            self.not_ready_reason = f"Milvus at {self.index.uri} does not answer"
        return self._healthy

    def _refresh_index_rows(self) -> None:
        """Keeps the index-size gauge current while indexing jobs add rows behind the server's back."""
        try:
            set_index_rows(self.index.collection, self.index.count())
            self._rows_counted_at = time.monotonic()
        except IndexUnavailable:
            pass

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": protocol.IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "ids", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "uris", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "embedding", "datatype": "FP32", "shape": [-1, self.backbone.dimension]},
        ]

    def _embed_and_search(self, items: list[SearchItem]) -> list[SearchOutcome]:
        """Runs in the device thread: one forward pass and one Milvus search for the whole batch."""
        with self.metrics.stage("embed"):
            embeddings = self.backbone.run(np.stack([item.pixels for item in items])).embeddings
        with self.metrics.stage("search"):
            hits = self.index.search(embeddings, max(item.top_k for item in items))
        return [
            SearchOutcome(embedding, item_hits[: item.top_k])
            for item, embedding, item_hits in zip(items, embeddings, hits, strict=True)
        ]

    def _parse(self, payload: dict | InferRequest) -> tuple[list[bytes], int, list[str]]:
        settings = self.settings
        if isinstance(payload, InferRequest):
            parameters = protocol.request_parameters(payload)
            images = protocol.images_from_v2(payload, settings.limits.max_images)
            default_outputs = ALL_OUTPUTS if protocol.bool_parameter(parameters, "return_embedding") else SEARCH_OUTPUTS
            outputs = protocol.requested_output_names(payload, ALL_OUTPUTS, default_outputs)
        else:
            instances = protocol.v1_instances(payload, settings.limits.max_images)
            parameters = protocol.v1_parameters(payload)
            images = [
                protocol.image_from_v1_value(instance.get("image") if isinstance(instance, dict) else instance, i)
                for i, instance in enumerate(instances)
            ]
            outputs = SEARCH_OUTPUTS
        top_k = protocol.int_parameter(parameters, "top_k", settings.default_top_k, 1, settings.max_top_k)
        return images, top_k, outputs

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> SearchResult:
        with tracked(self.metrics, self.name, self.backbone.spec.version, payload, headers) as tracker:
            images, top_k, outputs = self._parse(payload)
            tracker.images = len(images)
            prepared = await prepare_images(
                images, self.settings.limits, self.backbone.spec.preprocessing, self.metrics, self.backbone.device
            )
            try:
                outcomes = await asyncio.gather(
                    *(self._batcher.submit(SearchItem(image.pixels, top_k)) for image in prepared)
                )
            except IndexUnavailable:
                self._healthy_until = 0.0  # re-check Milvus on the next readiness probe, not in two seconds
                raise
            self.metrics.count_images(len(outcomes))
            self.metrics.observe_top1([outcome.hits[0].score for outcome in outcomes if outcome.hits])
            self.metrics.observe_queries(np.stack([outcome.embedding for outcome in outcomes]))
        return SearchResult(payload if isinstance(payload, InferRequest) else None, outcomes, top_k, outputs)

    async def postprocess(
        self, result: SearchResult, headers: dict[str, str] | None = None, response_headers: dict | None = None
    ) -> dict | InferResponse:
        if result.request is None:
            return {
                "predictions": [
                    [{"id": h.id, "score": h.score, "uri": h.uri, "metadata": h.metadata} for h in outcome.hits]
                    for outcome in result.outcomes
                ]
            }
        width = max((len(outcome.hits) for outcome in result.outcomes), default=0)
        hits = [outcome.hits for outcome in result.outcomes]
        tensors = {
            "ids": lambda: protocol.text_tensor([[h.id for h in row] for row in hits], width),
            "scores": lambda: protocol.number_tensor([[h.score for h in row] for row in hits], width),
            "uris": lambda: protocol.text_tensor([[h.uri for h in row] for row in hits], width),
            "embedding": lambda: np.stack([outcome.embedding for outcome in result.outcomes]).astype(np.float32),
        }
        return protocol.v2_response(self.name, result.request, result.outputs, tensors)
