"""Assembles the KServe ModelServer: both models on one shared backbone, and the protocol fixes they need."""

import argparse
import logging

import orjson
from fastapi.requests import Request
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve import model_server as kserve_model_server
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from predictor import __version__
from predictor.backbone import Backbone
from predictor.config import ServeSettings
from predictor.drain import Drain
from predictor.index import ImageIndex, IndexUnavailable
from predictor.metrics import set_build_info, start_gpu_metrics
from predictor.model_package import resolve_spec
from predictor.models.image_classifier import ImageClassifierModel
from predictor.models.image_search import ImageSearchModel
from predictor.request_size import RequestSizeLimit

logger = logging.getLogger(__name__)

SEARCH_MODEL = "image-search"
CLASSIFIER_MODEL = "image-classifier"
INFERENCE_HEADER_LENGTH = "inference-header-content-length"


def infer_request_from_binary(body: bytes, json_length: int, model_name: str) -> InferRequest:
    """Parse a V2 request that uses the binary data extension, keeping BYTES elements as raw bytes.

    KServe's own parser re-encodes BYTES tensors as UTF-8 text, which breaks on encoded image files.
    """
    if not 0 < json_length <= len(body):
        raise InvalidInput(f"{INFERENCE_HEADER_LENGTH} is {json_length} but the body is {len(body)} bytes")
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the JSON header of the binary request is invalid: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput('the JSON header of a V2 request must be an object with a list "inputs"')
    offset = json_length
    inputs = []
    for tensor in header["inputs"]:
        if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= tensor.keys():
            raise InvalidInput("each input needs name, shape and datatype")
        parameters = tensor.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None and "data" not in tensor:
            raise InvalidInput(f"input {tensor['name']!r} has neither data nor binary_data_size")
        infer_input = InferInput(
            tensor["name"], tensor["shape"], tensor["datatype"], data=tensor.get("data"), parameters=parameters
        )
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise InvalidInput(f"input {tensor['name']!r}: binary_data_size {size!r} runs past the request body")
            infer_input._raw_data = body[offset : offset + size]
            offset += size
        inputs.append(infer_input)
    if offset != len(body):
        raise InvalidInput(f"the request body has {len(body) - offset} bytes beyond its declared binary inputs")
    outputs = header.get("outputs")
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=header.get("id"),
        parameters=header.get("parameters"),
        request_outputs=[RequestedOutput(o["name"], o.get("parameters")) for o in outputs] if outputs else None,
    )


class ImageDataPlane(DataPlane):
    def __init__(self, model_registry, drain: Drain | None = None) -> None:  # noqa: ANN001 - KServe's type
        super().__init__(model_registry=model_registry)
        self.drain = drain

    def _draining(self) -> bool:
        return self.drain is not None and self.drain.draining

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        """Like KServe's, but a model that is not ready says why (e.g. its collection is still being indexed)."""
        # KServe 0.21's inference routes ask model_ready(name, True) before every request, its readiness routes ask
        # model_ready(name): a draining server still serves, but tells probes it is going away.
        if self._draining() and not disable_predictor_health_check:
            raise ModelNotReady(model_name, "the server is shutting down")
        ready = await super().model_ready(model_name, disable_predictor_health_check)
        reason = getattr(self.model_registry.get_model(model_name), "not_ready_reason", None)
        if not ready and reason:
            raise ModelNotReady(model_name, reason)
        return ready

    async def ready(self) -> bool:
        """Server readiness is every model's readiness (KServe's default answers True once the port is open)."""
        if self._draining():
            return False
        models = self.model_registry.get_models()
        for name in models:
            if not await self.model_registry.is_model_ready(name):
                return False
        return bool(models)

    def decode_inference_request(self, body, headers, model_name):  # noqa: ANN001 - KServe's signature
        if isinstance(body, bytes):
            # Without the header the whole body is the JSON request (clients such as tritonclient send JSON-only
            # requests without a JSON content type).
            try:
                json_length = int(headers.get(INFERENCE_HEADER_LENGTH, len(body)))
            except ValueError:
                raise InvalidInput(f"{INFERENCE_HEADER_LENGTH} must be an integer") from None
            return infer_request_from_binary(body, json_length, model_name)
        return super().decode_inference_request(body, headers, model_name)


async def index_unavailable_handler(_: Request, error: IndexUnavailable) -> JSONResponse:
    return JSONResponse(status_code=503, content={"error": f"search index unavailable: {error}"})


def build_models(settings: ServeSettings) -> tuple[ImageSearchModel, ImageClassifierModel]:
    spec = resolve_spec(settings.model_dir)
    backbone = Backbone(spec, settings.device, settings.precision)
    index = ImageIndex(
        settings.milvus.uri, settings.milvus.collection, spec.identity, settings.milvus.token, settings.milvus.index
    )
    return (
        ImageSearchModel(SEARCH_MODEL, backbone, index, settings),
        ImageClassifierModel(CLASSIFIER_MODEL, backbone, settings),
    )


def follow_request_limit_on_grpc(args: argparse.Namespace, max_request_bytes: int) -> None:
    """gRPC message limits are --max-request-bytes unless KServe's own flags for them are given.

    KServe 0.21 defaults them to 8 MiB, below the 10 MiB image limit, and its GRPCServer reads them from KServe's
    module-level parsed arguments.
    """
    for option in ("grpc_max_receive_message_length", "grpc_max_send_message_length"):
        explicit = getattr(args, option, kserve_model_server.MAX_GRPC_MESSAGE_LENGTH)
        value = explicit if explicit != kserve_model_server.MAX_GRPC_MESSAGE_LENGTH else max_request_bytes
        setattr(kserve_model_server.args, option, value)


def serve(settings: ServeSettings, args: argparse.Namespace) -> None:
    search, classifier = build_models(settings)
    # Load before opening ports: a pod whose model is invalid, or whose collection belongs to another model, fails here
    # and never turns ready.
    search.load()
    classifier.load()
    backbone = search.backbone
    for model in (search, classifier):
        set_build_info(__version__, model.name, backbone.spec.version, str(backbone.device), backbone.precision)
    start_gpu_metrics(str(backbone.device))
    kserve_model_server.app.add_exception_handler(IndexUnavailable, index_unavailable_handler)
    kserve_model_server.app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)
    follow_request_limit_on_grpc(args, settings.max_request_bytes)
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=False,
        grace_period=settings.shutdown_grace_s,
    )

    async def stop_grpc() -> None:
        # KServe keeps its gRPC server private; it exists once start() has run.
        if server._grpc_server is not None:
            await server._grpc_server.stop()

    drain = Drain(settings.drain_s, stop_grpc)
    kserve_model_server.app.router.on_startup.append(drain.install)
    server.dataplane = ImageDataPlane(model_registry=server.registered_models, drain=drain)
    # KServe registers only models that are ready at start; the search model may still be waiting for its index.
    server.register_model(search)
    server.start([search, classifier])
