"""Stand-ins for the request-path tests: a tiny backbone, an in-memory index, and the real KServe app and gRPC server
running in process around the real models, so a protocol change is tested without starting a server process."""

import argparse
import asyncio
import concurrent.futures
import io
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from predictor.errors import IndexUnavailable, RequestTimedOut
from predictor.identity import ModelIdentity
from predictor.imaging.decoding import ImageLimits, Preprocessing
from predictor.index.collection import Hit
from predictor.index.search_options import SearchOptions, SearchSettings
from predictor.index.settings import MilvusSettings
from predictor.index.vector_index import VectorIndex
from predictor.serving.settings import ServeSettings

DIMENSION = 4
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 30), "blue": (30, 40, 210), "grey": (128, 128, 128)}


def solid_jpeg(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(out, format="JPEG", quality=95)
    return out.getvalue()


def colour_vector(rgb: tuple[float, float, float]) -> np.ndarray:
    vector = np.array([*rgb, 64.0], dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


class FakeBackbone:
    """Embeds an image as its normalised mean colour (plus a constant), so similar colours are near neighbours."""

    dimension = DIMENSION
    text = None  # no text tower: an image-only model
    whole_batches = ()  # batches run as they come, never cut

    def __init__(self) -> None:
        identity = ModelIdentity("fake", "7", DIMENSION)
        self.spec = SimpleNamespace(
            name=identity.name,
            version=identity.version,
            identity=identity,
            preprocessing=Preprocessing(resize_shorter_side=8, input_size=8),
            has_text_tower=False,
        )
        self.device = torch.device("cpu")
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="device")
        self.batches: list[int] = []
        # A forward pass waits while this is clear: a device busy with a long batch.
        self.free = _set(threading.Event())

    def load(self) -> None:
        pass

    def warm_up(self) -> None:
        pass

    def run(self, pixels: np.ndarray, with_probabilities: bool = False) -> SimpleNamespace:
        self.batches.append(len(pixels))
        self.free.wait(60)
        embeddings = np.stack([colour_vector(image.reshape(-1, 3).mean(axis=0)) for image in pixels])
        probabilities = None
        if with_probabilities:
            probabilities = np.full((len(pixels), 1000), 0.1 / 999, dtype=np.float32)
            probabilities[:, 0] = 0.9
        return SimpleNamespace(embeddings=embeddings, probabilities=probabilities)


@dataclass
class FakeRow:
    namespace: str
    id: str
    vector: np.ndarray
    uri: str
    metadata: dict


@dataclass
class FakeIndex:
    """The part of `ImageIndex` the search model uses, in memory; it records what it was asked."""

    rows: list[FakeRow]
    uri: str = "fake://milvus"
    collection: str = "images__fake__7"
    identity: ModelIdentity = ModelIdentity("fake", "7", DIMENSION)
    unavailable: bool = False
    failing_searches: bool = False
    searches: list[tuple[SearchOptions, int]] = field(default_factory=list)
    vector_index: VectorIndex = field(default_factory=lambda: VectorIndex("IVF_FLAT", {"nlist": 128}))
    # Searches and reads by id wait while this is clear, as calls to a stalled Milvus do, until their timeout.
    answering: threading.Event = field(default_factory=lambda: _set(threading.Event()))
    call_timeouts: list[float | None] = field(default_factory=list)

    def _check(self, timeout_s: float | None = None) -> None:
        self.call_timeouts.append(timeout_s)
        if not self.answering.wait(timeout_s):
            raise RequestTimedOut(f"Milvus search on {self.collection!r} did not answer within {timeout_s:.3g} s")
        if self.unavailable:
            raise IndexUnavailable(f"Milvus search on {self.collection!r} failed: connection refused")

    def search(self, vectors: np.ndarray, options: SearchOptions, timeout_s: float | None = None) -> list[list[Hit]]:
        self._check(timeout_s)
        if self.failing_searches:
            raise IndexUnavailable(f"Milvus search on {self.collection!r} failed: deadline exceeded")
        # What ImageIndex._search_params asks of the collection's index, refusals included.
        self.vector_index.search_request(options.window, options.effort, options.offset + options.top_k)
        self.searches.append((options, len(vectors)))
        rows = [row for row in self.rows if row.namespace == options.namespace]
        results = []
        for vector in vectors:
            ranked = sorted(rows, key=lambda row: -float(row.vector @ vector))
            results.append(
                [Hit(row.id, float(row.vector @ vector), row.uri, row.metadata) for row in ranked[: options.window]]
            )
        return results

    def vectors_of(self, namespace: str, ids: list[str], timeout_s: float | None = None) -> dict[str, np.ndarray]:
        self._check(timeout_s)
        return {row.id: row.vector for row in self.rows if row.namespace == namespace and row.id in ids}

    def count(self) -> int:
        return len(self.rows)

    def ping(self, timeout_s: float | None = None) -> bool:
        return not self.unavailable

    def sample_vectors(self) -> np.ndarray:
        return np.stack([row.vector for row in self.rows])


def colour_rows() -> list[FakeRow]:
    rows = []
    for namespace in ("default", "shop"):
        for name, rgb in COLOURS.items():
            vector = colour_vector(np.asarray(rgb, dtype=np.float32))
            metadata = {"colour": name, "namespace_seen": namespace}
            rows.append(FakeRow(namespace, f"{name}-id", vector, f"/photos/{namespace}/{name}.jpg", metadata))
    return rows


def serve_settings(**overrides: Any) -> ServeSettings:
    values = dict(
        milvus=MilvusSettings("unused.db", "images"),
        model_dir=None,
        device="cpu",
        max_batch_size=8,
        max_batch_delay_ms=1.0,
        limits=ImageLimits(max_images=8),
    )
    values.update(overrides)
    return ServeSettings(**values)


@dataclass
class InProcessServer:
    """KServe's FastAPI app and gRPC server with both real models, on an event loop of their own."""

    loop: asyncio.AbstractEventLoop
    rest: Any
    grpc_stub: Any
    index: FakeIndex
    backbone: FakeBackbone
    search_model: Any
    channel: Any = None

    def run(self, coroutine: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.run(self.rest.post(path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.run(self.rest.get(path, **kwargs))

    def grpc(self, method: str, request: Any, metadata: tuple = (), timeout: float | None = None) -> Any:
        async def call() -> Any:
            return await getattr(self.grpc_stub, method)(request, metadata=metadata, timeout=timeout)

        return self.run(call())

    def grpc_raw(self, method: str, request: Any, response_type: Any) -> Any:
        """A method of the inference service that KServe's stub does not have, by its full name."""
        call = self.channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )

        async def answer() -> Any:
            return await call(request, timeout=30)

        return self.run(answer())


@pytest.fixture(scope="session")
def in_process_server() -> InProcessServer:
    import grpc
    import httpx
    from kserve import ModelServer
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_server import app
    from kserve.model_server import args as kserve_args
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.server import GRPCServer
    from kserve.protocol.rest.server import RESTServer

    from harness.predictor_server import free_port
    from predictor.models.image_classifier import ImageClassifierModel
    from predictor.models.image_search import ImageSearchModel
    from predictor.serving import kserve
    from predictor.serving.kserve import grpc_service

    backbone, index = FakeBackbone(), FakeIndex(colour_rows())
    settings = serve_settings()
    search = ImageSearchModel(
        "image-search", backbone, lambda: index, settings, SearchSettings(namespace_header="x-tenant")
    )
    classifier = ImageClassifierModel("image-classifier", backbone, settings)
    models = [search, classifier]
    for model in models:
        model.load()
    grpc_port = free_port()
    server = ModelServer(http_port=free_port(), grpc_port=grpc_port, workers=1, enable_grpc=True)
    kserve.install(server, models)
    # As serve() does: the gRPC message limit follows the request size limit (KServe's own flags not given).
    grpc_service.follow_request_limit_on_grpc(argparse.Namespace(), settings.max_request_bytes)
    RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, 0).create_application()
    grpc_server = GRPCServer(grpc_port, server.dataplane, server.model_repository_extension, kwargs=vars(kserve_args))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="in-process-server", daemon=True)
    thread.start()
    serving = asyncio.run_coroutine_threadsafe(grpc_server.start(4), loop)

    async def clients() -> tuple[Any, Any, Any]:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
        await asyncio.wait_for(channel.channel_ready(), 30)
        rest = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process")
        return rest, channel, grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)

    rest, channel, stub = asyncio.run_coroutine_threadsafe(clients(), loop).result(timeout=60)
    try:
        yield InProcessServer(loop, rest, stub, index, backbone, search, channel)
    finally:

        async def close() -> None:
            await rest.aclose()
            await channel.close()
            await grpc_server.stop()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=60)
        serving.result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
