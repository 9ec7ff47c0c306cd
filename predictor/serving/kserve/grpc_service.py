"""gRPC: the servicer with typed errors and client deadlines, Triton's ModelConfig and ModelStatistics, message limits,
stop."""

import argparse
import functools
from collections.abc import Awaitable, Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf import json_format
from kserve import ModelServer
from kserve import errors as kserve_errors
from kserve import model_server as kserve_model_server
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as kserve_grpc_service
from kserve.protocol.grpc import server as kserve_grpc_server
from kserve.protocol.grpc.servicer import InferenceServicer

from predictor.errors import ModelUnavailable, ServiceError
from predictor.observability.logs import log_refusal
from predictor.serving import deadlines
from predictor.serving.kserve import model_config, triton_messages
from predictor.serving.kserve.data_plane import check_version
from predictor.serving.kserve.errors import as_service_error, grpc_error
from predictor.serving.kserve.parameters import request_parameters

__all__ = [
    "ImageSearchServicer",
    "follow_request_limit_on_grpc",
    "grpc_stopper",
    "register_triton_methods",
    "request_parameters",
]

# Where KServe's generated gRPC code adds the service, and so where Triton's extra methods join it.
GRPC_SERVICE = "inference.GRPCInferenceService"


def _translated(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def answer(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        deadlines.client_deadline_in(context.time_remaining())
        try:
            return await method(self, request, context)
        except (ServiceError, kserve_errors.InvalidInput, kserve_errors.ModelNotFound) as error:
            typed = as_service_error(error)
            if typed is None:  # not reached: every error caught here has a typed meaning
                raise
            model = getattr(request, "model_name", "") or getattr(request, "name", "")
            log_refusal(typed, "v2-grpc", model, dict(context.invocation_metadata() or ()))
            raise grpc_error(typed) from None

    return answer


class ImageSearchServicer(InferenceServicer):
    """KServe's servicer, with typed errors mapped to their status codes and model versions honoured."""

    ModelInfer = _translated(InferenceServicer.ModelInfer)
    ServerMetadata = _translated(InferenceServicer.ServerMetadata)
    ServerReady = _translated(InferenceServicer.ServerReady)

    @_translated
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:  # noqa: N802
        described = await self._data_plane.model_metadata(request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=described["name"],
            versions=described["versions"] or [],
            platform=described["platform"],
            inputs=described["inputs"],
            outputs=described["outputs"],
        )

    @_translated
    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        model = self._data_plane.get_model_from_registry(request.name)
        check_version(model, request.version or None)
        return model_config.model_config_message(model)

    @_translated
    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        statistics = self._data_plane.model_statistics(request.name, request.version or None)
        return json_format.ParseDict(statistics, triton_messages.ModelStatisticsResponse(), ignore_unknown_fields=True)

    @_translated
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        check_version(self._data_plane.get_model_from_registry(request.name), request.version or None)
        try:
            ready = await self._data_plane.model_ready(model_name=request.name)
        except ModelUnavailable:
            ready = False
        return pb.ModelReadyResponse(ready=ready)


def follow_request_limit_on_grpc(args: argparse.Namespace, max_request_bytes: int) -> None:
    """gRPC message limits are --max-request-bytes unless KServe's own flags for them are given.

    KServe 0.21 defaults them to 8 MiB, below the 10 MiB image limit, and `ModelServer.start` builds its GRPCServer
    from KServe's module-level parsed arguments (`kwargs=vars(args)`), not from the ones `image-search` parsed.
    """
    for option in ("grpc_max_receive_message_length", "grpc_max_send_message_length"):
        explicit = getattr(args, option, kserve_model_server.MAX_GRPC_MESSAGE_LENGTH)
        value = explicit if explicit != kserve_model_server.MAX_GRPC_MESSAGE_LENGTH else max_request_bytes
        setattr(kserve_model_server.args, option, value)


def grpc_stopper(server: ModelServer) -> Callable[[], Coroutine[Any, Any, None]]:
    """A coroutine function that stops `server`'s gRPC server (GOAWAY, then its grace period) once `start()` has
    made one; KServe keeps it in the private `_grpc_server`."""

    async def stop() -> None:
        grpc_server = getattr(server, "_grpc_server", None)
        if grpc_server is not None:
            await grpc_server.stop()

    return stop


def _add_servicer_with_triton_methods(servicer: ImageSearchServicer, server: grpc.aio.Server) -> None:
    kserve_grpc_service.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    # A second handler for the same service: gRPC asks it for the methods KServe's generated code does not know.
    methods = {
        "ModelConfig": grpc.unary_unary_rpc_method_handler(
            servicer.ModelConfig,
            request_deserializer=triton_messages.ModelConfigRequest.FromString,
            response_serializer=triton_messages.ModelConfigResponse.SerializeToString,
        ),
        "ModelStatistics": grpc.unary_unary_rpc_method_handler(
            servicer.ModelStatistics,
            request_deserializer=triton_messages.ModelStatisticsRequest.FromString,
            response_serializer=triton_messages.ModelStatisticsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, methods),))


def register_triton_methods() -> None:
    """KServe's GRPCServer.start adds its servicer through its module's `grpc_predict_v2_pb2_grpc`; here the same
    call also adds Triton's `ModelConfig` and `ModelStatistics` to the service."""
    kserve_grpc_server.grpc_predict_v2_pb2_grpc = SimpleNamespace(
        add_GRPCInferenceServiceServicer_to_server=_add_servicer_with_triton_methods
    )
