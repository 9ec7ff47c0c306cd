"""KServe model `image-search`: images, embeddings or ids in, the most similar catalogue images out.

Only the embedding runs on the device thread, batched across requests; Milvus searches run in a pool of their own
(search_pool.py), grouped by equal search options, so the next forward pass overlaps this batch's searches.
"""

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from kserve.protocol.infer_type import InferRequest, InferResponse

from predictor.embedding.backbone import Backbone
from predictor.errors import IndexUnavailable, ModelUnavailable, UnknownId
from predictor.index.collection import Hit, ImageIndex, IndexMismatch, IndexNotReady
from predictor.index.reranking import MAX_GROUP_SIZE, MAX_HITS_REORDERED
from predictor.index.search_options import DEFAULT_NAMESPACE, MAX_RESULT_WINDOW, SearchOptions, SearchSettings
from predictor.models.base import ImageModel
from predictor.observability.metrics import set_index_rows
from predictor.protocol.search import (
    EMBEDDING,
    ID,
    IMAGE,
    TEXT,
    SearchRequest,
    SearchResult,
    page_of,
    parse_search_request,
    response,
)
from predictor.serving import deadlines
from predictor.serving.batching import MicroBatcher
from predictor.serving.image_preparation import decode_executor
from predictor.serving.search_pool import SearchPool
from predictor.serving.settings import ServeSettings

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

HEALTH_TTL_S = 2.0
# A readiness check gives Milvus this long to answer, so a stalled Milvus turns readiness false instead of hanging
# the probe (Kubernetes' probe timeout is 5 s by default).
HEALTH_TIMEOUT_S = 2.0
INDEX_ROWS_TTL_S = 30.0


class ImageSearchModel(ImageModel):
    def __init__(
        self,
        name: str,
        backbone: Backbone,
        open_index: Callable[[], ImageIndex],
        settings: ServeSettings,
        search: SearchSettings,
    ) -> None:
        """`open_index` finds, checks and loads this model's collection (`ImageIndex.open_for_search`), raising
        `IndexNotReady`, `IndexMismatch` or `IndexUnavailable` when it cannot."""
        super().__init__(name, backbone, settings)
        self.open_index = open_index
        self.search_settings = search
        self.index: ImageIndex | None = None
        self._pool: SearchPool[SearchOptions] | None = None
        self._text_batcher: MicroBatcher | None = None
        self._healthy_until = 0.0
        self._healthy = False
        self._health_check_running = False
        self._rows_counted_at = 0.0
        self.not_ready_reason: str | None = "not loaded yet"

    def load(self) -> bool:
        """Load the network and open this model's collection; a missing or empty one leaves us waiting, not failing.

        Waiting matters on Kubernetes: a canary with a new model starts before its indexing job has finished, and
        becomes ready by itself once the collection is there.
        """
        # Milvus (for milvus-lite, a process of its own) starts while the network loads: a pod is ready sooner.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="open-index") as opener:
            opening = opener.submit(self.open_index)
            self.backbone.load()
            self.backbone.warm_up()
            self._finish_loading()
            self._open_index(mismatch_is_fatal=True, opening=opening)
        return self.ready

    def _finish_loading(self) -> None:
        self.start_batcher(self._embed)
        if self.backbone.text is not None:
            self._text_batcher = MicroBatcher(
                self._embed_texts,
                max_batch_size=self.settings.max_batch_size,
                max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
                executor=self.backbone.executor,
                on_batch=self.metrics.observe_batch,
            )
        pool = self._pool = SearchPool(self._search, self.search_settings.search_workers)
        self.metrics.watch_search_backlog(lambda: pool.waiting_queries)

    def start(self) -> None:
        """KServe's default marks the model ready here; ours is ready only once its collection is open."""

    def _open_index(
        self, mismatch_is_fatal: bool = False, opening: concurrent.futures.Future[ImageIndex] | None = None
    ) -> None:
        try:
            index = opening.result() if opening is not None else self.open_index()
        except IndexMismatch as error:
            if mismatch_is_fatal:
                raise
            self.ready, self.not_ready_reason = False, str(error)
            return
        except (IndexNotReady, IndexUnavailable) as error:
            self.ready, self.not_ready_reason = False, str(error)
            logger.warning("%s is not ready: %s", self.name, error)
            return
        self.index = index
        self._refresh_index_rows()
        sample = index.sample_vectors()
        if len(sample):
            self.metrics.set_reference_centroid(sample.mean(axis=0))
        self.not_ready_reason = None
        self.ready = True
        logger.info("%s searches %s (%s)", self.name, index.collection, index.identity)

    async def healthy(self) -> bool:
        """Ready only while this model's collection is searchable; checked at most every couple of seconds."""
        now = time.monotonic()
        # One check at a time: while one waits on a slow Milvus, probes get the last answer instead of a thread each.
        if now < self._healthy_until or self._health_check_running:
            return self._healthy
        self._healthy_until = now + HEALTH_TTL_S
        self._health_check_running = True
        try:
            await self._check_health(now)
        finally:
            self._health_check_running = False
        return self._healthy

    async def _check_health(self, now: float) -> None:
        index = self.index
        if not self.ready or index is None:
            await asyncio.to_thread(self._open_index)
            self._healthy = self.ready
        elif await asyncio.to_thread(index.ping, HEALTH_TIMEOUT_S):
            self._healthy = True
            self.not_ready_reason = None
            if now - self._rows_counted_at > INDEX_ROWS_TTL_S:
                await asyncio.to_thread(self._refresh_index_rows)
        else:
            self._healthy = False
            self.not_ready_reason = f"Milvus at {index.uri} does not answer within {HEALTH_TIMEOUT_S:g} s"

    def _refresh_index_rows(self) -> None:
        """Keeps the index-size gauge current while indexing jobs add rows behind the server's back."""
        index = self.index
        if index is None:
            return
        try:
            set_index_rows(index.collection, index.count())
            self._rows_counted_at = time.monotonic()
        except IndexUnavailable:
            pass

    @property
    def takes_text(self) -> bool:
        return self.backbone.text is not None

    def get_input_types(self) -> list[dict[str, Any]]:
        text = [{"name": TEXT, "datatype": "BYTES", "shape": [-1]}] if self.takes_text else []
        return [
            *super().get_input_types(),
            *text,
            {"name": EMBEDDING, "datatype": "FP32", "shape": [-1, self.backbone.dimension]},
            {"name": ID, "datatype": "BYTES", "shape": [-1]},
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "ids", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "uris", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "metadata", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "embedding", "datatype": "FP32", "shape": [-1, self.backbone.dimension]},
        ]

    def metadata_parameters(self) -> dict[str, Any]:
        """What the model metadata (REST) declares beyond the tensors: one query input per request, the options."""
        serve = self.settings
        return {
            "inputs": f"send exactly one of {', '.join(item['name'] for item in self.get_input_types())}",
            "optional_outputs": ["metadata (return_metadata: true)", "embedding (return_embedding: true)"],
            "top_k": {"type": "integer", "default": serve.default_top_k, "minimum": 1, "maximum": serve.max_top_k},
            "offset": {"type": "integer", "default": 0, "minimum": 0, "maximum_with_top_k": MAX_RESULT_WINDOW},
            "min_score": {"type": "number", "minimum": -1.0, "maximum": 1.0},
            "filter": {"type": "string", "example": 'metadata["category"] == "birds" and metadata["price"] < 20'},
            "namespace": {"type": "string", "default": DEFAULT_NAMESPACE},
            "effort": self._effort_metadata(),
            "diversity": {
                "type": "number",
                "default": 0.0,
                "minimum": 0.0,
                "maximum": 1.0,
                "note": "maximal marginal relevance over 10 candidates per hit; offset + top_k at most "
                f"{MAX_HITS_REORDERED}; scores stay the similarity to the query",
            },
            "group_by": {
                "type": "string",
                "example": "shop",
                "note": "a metadata field: at most group_size hits per value (a hit without it is a group of its own); "
                f"offset + top_k at most {MAX_HITS_REORDERED}",
            },
            "group_size": {"type": "integer", "default": 1, "minimum": 1, "maximum": MAX_GROUP_SIZE},
            "return_metadata": {"type": "boolean", "default": False},
            "return_embedding": {"type": "boolean", "default": False},
        }

    def _effort_metadata(self) -> dict[str, Any]:
        if self.index is None:
            return {"type": "integer", "note": "bounds follow the collection's index, which is not open yet"}
        return self.index.vector_index.effort_metadata()

    def _embed(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Runs in the device thread: one forward pass for the whole batch, nothing else."""
        with self.metrics.stage("embed"):
            return self.backbone.run(np.stack(pixels)).embeddings

    def _embed_texts(self, tokens: list["torch.Tensor"]) -> np.ndarray:
        """Runs in the device thread: the text tower's forward pass for the whole batch of token rows."""
        import torch

        with self.metrics.stage("embed"):
            return self.backbone.embed_text(torch.stack(tokens))

    def _text_refusal(self) -> str | None:
        if self.takes_text:
            return None
        spec = self.backbone.spec
        return (
            f"model {self.name} serves {spec.identity}, which has no text tower: it takes "
            "image, embedding or id queries; text queries need a CLIP model package (export-model --open-clip)"
        )

    def _search(self, options: SearchOptions, vectors: np.ndarray, timeout_s: float | None) -> list[list[Hit]]:
        """Runs in a search worker: one Milvus search for every query waiting with these options."""
        index = self._open_index_or_refuse()
        with self.metrics.stage("search"):
            return index.search(vectors, options, timeout_s)

    def _open_index_or_refuse(self) -> ImageIndex:
        if self.index is None:
            raise ModelUnavailable(f"{self.name} is not ready: {self.not_ready_reason}")
        return self.index

    def _search_pool(self) -> SearchPool[SearchOptions]:
        if self._pool is None:
            raise ModelUnavailable(f"{self.name} is not ready: {self.not_ready_reason}")
        return self._pool

    def images_in(self, parsed: SearchRequest) -> int:
        return len(parsed.queries.images)

    def queries_in(self, parsed: SearchRequest) -> int:
        queries = parsed.queries
        return len(queries.images) or len(queries.ids) or (0 if queries.embeddings is None else len(queries.embeddings))

    async def preprocess(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> SearchRequest:
        vector_index = self.index.vector_index if self.index is not None else None
        return parse_search_request(
            payload,
            headers,
            self.settings,
            self.search_settings,
            self.backbone.dimension,
            vector_index,
            text_refusal=self._text_refusal(),
        )

    async def _query_vectors(self, request: SearchRequest) -> np.ndarray:
        queries = request.queries
        if queries.kind == IMAGE:
            _, embeddings = await self.run_on_device(queries.images)
            return np.stack(embeddings)
        text, text_batcher = self.backbone.text, self._text_batcher
        if queries.kind == TEXT and text is not None and text_batcher is not None:
            tokens = await asyncio.get_running_loop().run_in_executor(decode_executor(), text.tokenize, queries.texts)
            return np.stack(await asyncio.gather(*(text_batcher.submit(row) for row in tokens)))
        if queries.kind == EMBEDDING and queries.embeddings is not None:
            return queries.embeddings
        stored = await asyncio.to_thread(
            self._open_index_or_refuse().vectors_of, request.options.namespace, queries.ids, deadlines.remaining_s()
        )
        missing = [image_id for image_id in queries.ids if image_id not in stored]
        if missing:
            raise UnknownId(f"id {missing[0]!r} is not in namespace {request.options.namespace!r}")
        return np.stack([stored[image_id] for image_id in queries.ids])

    async def predict(self, request: SearchRequest, headers: dict[str, str] | None = None) -> SearchResult:
        try:
            vectors = await self._query_vectors(request)
            rows = await self._search_pool().search(request.options, vectors, deadlines.deadline())
        except IndexUnavailable:
            self._healthy_until = 0.0  # re-check Milvus on the next readiness probe, not in two seconds
            raise
        own_ids = request.queries.ids if request.queries.kind == ID else [None] * len(rows)
        hits = [page_of(row, request.options, own) for row, own in zip(rows, own_ids, strict=True)]
        # Top-1 similarity and drift describe image queries against an index of images. A text vector sits far from
        # every image vector in a CLIP space (the modality gap), so counting it would read as drift.
        if request.queries.kind not in (ID, TEXT):
            self.metrics.observe_top1([row[0].score for row in rows if row])
            self.metrics.observe_queries(vectors)
        return SearchResult(request, hits, vectors)

    async def postprocess(
        self, result: SearchResult, headers: dict[str, str] | None = None, response_headers: dict | None = None
    ) -> dict | InferResponse:
        return response(self.name, self.version, result)
