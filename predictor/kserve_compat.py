"""Every place this project works around or extends KServe's own behaviour, written for KServe 0.21.0.

- **Errors**: one mapping for every transport. A `predictor.errors.ServiceError` answers REST (V1 and V2) with its
  `status.http` and `{"error": message}`, and gRPC with its `status.grpc` and the message. KServe's own gRPC
  interceptor turns any exception it does not know into `INTERNAL "Internal server error"`, and it knows only
  `grpc_interceptor`'s `GrpcException` of the kinds a model may raise, so errors become one at the servicer.
  KServe's own client errors (a body that is not JSON, an unknown model, a body FastAPI's schema refuses) become
  typed errors too.
- **Error logs**: KServe logs every error it answers at ERROR with a traceback, a 400 or a readiness 503 alike. Here a
  refused request is one line of the request log (`image_search.requests`, at INFO for a client's error, WARNING for
  the server's), without a traceback, and a KServe line about an error it answered loses its traceback too.
- **Deadlines**: a gRPC client's deadline is recorded for the request (predictor/deadlines.py), so the server gives up
  when the client has.
- **gRPC server**: KServe reads the gRPC message limits from its module-level parsed arguments and keeps the server
  it starts private (`ModelServer._grpc_server`); `follow_request_limit_on_grpc` and `grpc_stopper` reach them.
- **Binary BYTES**: KServe's parser of the REST binary data extension decodes BYTES elements as UTF-8 text, which breaks
  on encoded image files; `infer_request_from_binary` keeps them as bytes.
- **Float parameters over gRPC**: KServe's copy of the protocol lacks `InferParameter.double_param`, so a float such
  as `min_score=0.5` from tritonclient arrives as an unknown protobuf field; `request_parameters` reads it.
- **Readiness**: KServe's server readiness is True once the port is open, and its model readiness gives no reason;
  here the server is ready when every model is, and an unready model says why. KServe's gRPC `ModelInfer` calls
  `load()` on an unready model, on the event loop; here it answers UNAVAILABLE instead.
- **Registering before start**: `ModelServer.start` registers only models that are ready, and the search model may
  still be waiting for its index.
- **Versions**: KServe answers 501 on every `/versions/<v>/` path and ignores the version in gRPC requests; here the
  version being served works on both, any other is 404 / NOT_FOUND, and model metadata lists the version.
- **Server metadata** names this project and its version, not only KServe.

Models take part by duck typing: `version` (the served model version), `not_ready_reason`, and
`metadata_parameters()` (what the model metadata declares about optional inputs and parameters).

tests/unit/test_kserve_compat.py drives KServe's real REST app and gRPC server in process through these, so a KServe
upgrade that changes any of them fails a test; `KSERVE_VERSION` is checked there too.
"""

import argparse
import functools
import logging
import re
import struct
from collections.abc import Awaitable, Callable
from importlib import metadata as package_metadata
from typing import Any

import grpc
import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import JSONResponse
from google.protobuf import unknown_fields
from grpc_interceptor.exceptions import GrpcException
from kserve import ModelServer
from kserve import errors as kserve_errors
from kserve import model_server as kserve_model_server
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import server as kserve_grpc_server
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from predictor import __version__, deadlines
from predictor.errors import InvalidRequest, ModelUnavailable, ModelVersionNotFound, ServiceError, UnknownModel
from predictor.logs import log_refusal

__all__ = [
    "KSERVE_VERSION",
    "SERVER_NAME",
    "ImageDataPlane",
    "ImageSearchServicer",
    "VersionedPaths",
    "as_service_error",
    "error_response",
    "follow_request_limit_on_grpc",
    "grpc_error",
    "grpc_stopper",
    "infer_request_from_binary",
    "install",
    "register_before_start",
    "request_parameters",
]

logger = logging.getLogger(__name__)

KSERVE_VERSION = "0.21.0"
SERVER_NAME = "image-search"
INFERENCE_HEADER_LENGTH = "inference-header-content-length"
# Field 4 of the Open Inference Protocol's InferParameter is `double_param` (fixed64 on the wire).
_DOUBLE_PARAM_FIELD = 4
_FIXED64_WIRE_TYPE = 1


# Errors ---------------------------------------------------------------------------------------------------------------


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(status_code=error.status.http, content={"error": error.message})


def grpc_error(error: ServiceError) -> GrpcException:
    """The exception KServe's gRPC interceptor answers with this error's status code and message."""
    return GrpcException(details=error.message, status_code=grpc.StatusCode[error.status.grpc])


def as_service_error(error: BaseException) -> ServiceError | None:
    """The typed error for `error`: itself, or what one of KServe's own client errors means; None for anything else."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, kserve_errors.ModelNotFound):
        return UnknownModel(str(error))
    if isinstance(error, kserve_errors.InvalidInput):
        return InvalidRequest(str(error))
    return None


def _rest_protocol(path: str) -> str:
    return "v1" if path.startswith("/v1/") else "v2-rest"


async def _service_error_handler(request: Request, error: ServiceError) -> JSONResponse:
    # An error raised inside a model call was logged with its request; one raised before (decoding, routing) was not.
    log_refusal(error, _rest_protocol(request.url.path), request.path_params.get("model_name", ""), request.headers)
    return error_response(error)


async def _validation_error_handler(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem.get('loc', ()) if part != 'body') or 'body'}: {problem.get('msg')}"
        for problem in error.errors()[:3]
    )
    return await _service_error_handler(request, InvalidRequest(f"the request body is not a valid request: {problems}"))


# KServe's errors that it answers with a status a client can act on (4xx, 503): logged without a traceback.
_ANSWERED_KSERVE_ERRORS = (
    kserve_errors.InvalidInput,
    kserve_errors.ModelNotFound,
    kserve_errors.ModelNotReady,
    kserve_errors.ServerNotReady,
    kserve_errors.ServerNotLive,
    ServiceError,
)


class AnsweredErrorsWithoutTracebacks(logging.Filter):
    """On KServe's logger: a record of an error KServe answered with a client's or an availability status becomes
    one WARNING line naming it, without the traceback (an unready server's readiness probes would log one each)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, _ANSWERED_KSERVE_ERRORS) and record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
            record.msg, record.args = f"{type(error).__name__}: {error}", None
            record.exc_info, record.exc_text = None, None
        return True


# Request parsing ------------------------------------------------------------------------------------------------------


def _parameter_value(value: Any) -> Any:
    """gRPC parameters arrive as InferParameter messages; read whichever field is set, double_param included."""
    if not hasattr(value, "WhichOneof"):
        return value
    kind = value.WhichOneof("parameter_choice")
    if kind:
        return getattr(value, kind)
    for unknown in unknown_fields.UnknownFieldSet(value):
        if unknown.field_number == _DOUBLE_PARAM_FIELD and unknown.wire_type == _FIXED64_WIRE_TYPE:
            return struct.unpack("<d", struct.pack("<Q", unknown.data))[0]
    return None


def request_parameters(request: InferRequest) -> dict[str, Any]:
    """A V2 request's parameters as plain values, whichever transport brought them."""
    parameters = request.parameters or {}
    return {key: _parameter_value(value) for key, value in parameters.items()}


def infer_request_from_binary(body: bytes, json_length: int, model_name: str) -> InferRequest:
    """Parse a V2 request that uses the binary data extension, keeping BYTES elements as raw bytes."""
    if not 0 < json_length <= len(body):
        raise InvalidRequest(f"{INFERENCE_HEADER_LENGTH} is {json_length} but the body is {len(body)} bytes")
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"the JSON header of the binary request is invalid: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidRequest('the JSON header of a V2 request must be an object with a list "inputs"')
    offset = json_length
    inputs = []
    for tensor in header["inputs"]:
        if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= tensor.keys():
            raise InvalidRequest("each input needs name, shape and datatype")
        if not isinstance(tensor["name"], str) or not isinstance(tensor["datatype"], str):
            raise InvalidRequest("an input's name and datatype are strings")
        shape = tensor["shape"]
        if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
            raise InvalidRequest(f"input {tensor['name']!r}: shape must be a list of sizes (0 or more), got {shape!r}")
        parameters = tensor.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None and "data" not in tensor:
            raise InvalidRequest(f"input {tensor['name']!r} has neither data nor binary_data_size")
        infer_input = InferInput(
            tensor["name"], tensor["shape"], tensor["datatype"], data=tensor.get("data"), parameters=parameters
        )
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise InvalidRequest(f"input {tensor['name']!r}: binary_data_size {size!r} runs past the request body")
            # KServe's own parser keeps raw tensor bytes here too; as_numpy() reads them.
            infer_input._raw_data = body[offset : offset + size]
            offset += size
        inputs.append(infer_input)
    if offset != len(body):
        raise InvalidRequest(f"the request body has {len(body) - offset} bytes beyond its declared binary inputs")
    outputs = header.get("outputs")
    if outputs is not None and not (
        isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise InvalidRequest('"outputs" must be a list of objects with a "name"')
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=header.get("id"),
        parameters=header.get("parameters"),
        request_outputs=[RequestedOutput(o["name"], o.get("parameters")) for o in outputs] if outputs else None,
    )


# The data plane: readiness, versions, metadata ------------------------------------------------------------------------


def _check_version(model: Any, version: str | None) -> None:
    served = getattr(model, "version", None)
    if version and version != served:
        raise ModelVersionNotFound(
            f"model {model.name} has no version {version!r}; this server runs version {served!r}"
        )


class ImageDataPlane(DataPlane):
    def __init__(self, model_registry: Any, drain: Any = None) -> None:
        """`drain` (predictor/drain.py) turns readiness false while the server shuts down."""
        super().__init__(model_registry=model_registry)
        self.drain = drain

    def _draining(self) -> bool:
        return self.drain is not None and self.drain.draining

    def get_model_from_registry(self, name: str) -> Any:
        model = self.model_registry.get_model(name)
        if model is None:
            raise UnknownModel(
                f"model {name!r} is not served here; this server serves {sorted(self.model_registry.get_models())}"
            )
        return model

    def decode(self, body, headers, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - KServe's signature
        try:
            return super().decode(body, headers, *args, **kwargs)
        except kserve_errors.InvalidInput as error:
            raise InvalidRequest(str(error)) from None

    def metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data", "parameters"]}

    async def model_metadata(self, model_name: str, model_version: str | None = None) -> dict:
        """KServe's metadata, plus the version served and what the model declares about its optional inputs."""
        model = self.get_model_from_registry(model_name)
        _check_version(model, model_version)
        described = await super().model_metadata(model_name)
        versions = [model.version] if getattr(model, "version", None) else None
        parameters = model.metadata_parameters() if hasattr(model, "metadata_parameters") else None
        return {**described, "versions": versions, **({"parameters": parameters} if parameters else {})}

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        """Like KServe's, but a model that is not ready says why (e.g. its collection is still being indexed)."""
        # KServe 0.21's inference routes ask model_ready(name, True) before every request, its readiness routes ask
        # model_ready(name): a draining server still serves, but tells probes it is going away.
        if self._draining() and not disable_predictor_health_check:
            raise ModelUnavailable(f"model {model_name} is not ready: the server is shutting down")
        self.get_model_from_registry(model_name)
        ready = await super().model_ready(model_name, disable_predictor_health_check)
        reason = getattr(self.model_registry.get_model(model_name), "not_ready_reason", None)
        if not ready and reason:
            raise ModelUnavailable(f"model {model_name} is not ready: {reason}")
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

    async def infer(self, model_name: str, request: Any, headers: dict[str, str] | None = None) -> tuple[Any, dict]:
        """Refuse a pinned version this server does not run, and a model that is not ready, before calling it."""
        model = self.get_model_from_registry(model_name)
        _check_version(model, getattr(request, "model_version", None))
        if not await self.model_ready(model_name, disable_predictor_health_check=True):
            raise ModelUnavailable(f"model {model_name} is not ready")
        return await model(request, headers=headers)

    def decode_inference_request(self, body, headers, model_name):  # noqa: ANN001, ANN201 - KServe's signature
        if isinstance(body, bytes):
            # Without the header the whole body is the JSON request (clients such as tritonclient send JSON-only
            # requests without a JSON content type).
            try:
                json_length = int(headers.get(INFERENCE_HEADER_LENGTH, len(body)))
            except ValueError:
                raise InvalidRequest(f"{INFERENCE_HEADER_LENGTH} must be an integer") from None
            return infer_request_from_binary(body, json_length, model_name)
        return super().decode_inference_request(body, headers, model_name)


# gRPC -----------------------------------------------------------------------------------------------------------------


def _translated(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def answer(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        deadlines.client_deadline_in(context.time_remaining())
        try:
            return await method(self, request, context)
        except (ServiceError, kserve_errors.InvalidInput, kserve_errors.ModelNotFound) as error:
            typed = as_service_error(error)
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
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        _check_version(self._data_plane.get_model_from_registry(request.name), request.version or None)
        try:
            ready = await self._data_plane.model_ready(model_name=request.name)
        except ModelUnavailable:
            ready = False
        return pb.ModelReadyResponse(ready=ready)


# REST -----------------------------------------------------------------------------------------------------------------

_VERSIONED_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/infer|/ready)?$")


class VersionedPaths:
    """ASGI middleware: `/v2/models/<m>/versions/<v>[/infer|/ready]` reaches `/v2/models/<m>[...]` for the version
    being served, and answers 404 for any other; KServe's own routes for these paths answer 501."""

    def __init__(self, app: Any, version_of: Callable[[str], str | None]) -> None:
        self.app = app
        self.version_of = version_of

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        match = _VERSIONED_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match:
            model, version = match.group("model"), match.group("version")
            served = self.version_of(model)
            if served is not None and version != served:
                error = ModelVersionNotFound(
                    f"model {model} has no version {version!r}; this server runs version {served!r}"
                )
                await error_response(error)(scope, receive, send)
                return
            path = f"/v2/models/{model}{match.group('rest') or ''}"
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


def _register_rest(server: ModelServer, dataplane: ImageDataPlane) -> None:
    app = kserve_model_server.app

    def version_of(name: str) -> str | None:
        model = server.registered_models.get_model(name)
        return getattr(model, "version", None) if model else None

    async def model_metadata(model_name: str) -> dict:
        # KServe's route validates against a schema without "parameters" and drops them.
        return await dataplane.model_metadata(model_name)

    app.add_exception_handler(ServiceError, _service_error_handler)
    # FastAPI answers a body its schema refuses with 422 and a list of problems; this is bad input like any other.
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_middleware(VersionedPaths, version_of=version_of)
    # Routes added before KServe adds its own (in ModelServer.start) are matched first.
    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"], include_in_schema=False)


def install(server: ModelServer, models: list[Any], drain: Any = None) -> None:
    """Wire every workaround into `server` before `server.start(models)`; `drain` as for `ImageDataPlane`."""
    installed = package_metadata.version("kserve")
    if installed != KSERVE_VERSION:
        logger.warning(
            "KServe %s is installed; the workarounds in %s were written for %s", installed, __name__, KSERVE_VERSION
        )
    kserve_logger = logging.getLogger("kserve")
    if not any(isinstance(f, AnsweredErrorsWithoutTracebacks) for f in kserve_logger.filters):
        kserve_logger.addFilter(AnsweredErrorsWithoutTracebacks())
    dataplane = ImageDataPlane(model_registry=server.registered_models, drain=drain)
    server.dataplane = dataplane
    _register_rest(server, dataplane)
    # GRPCServer.start builds its servicer from this module attribute.
    kserve_grpc_server.InferenceServicer = ImageSearchServicer
    register_before_start(server, models)


def register_before_start(server: ModelServer, models: list[Any]) -> None:
    """KServe registers only models that are ready at start; the search model may still be waiting for its index."""
    for model in models:
        server.register_model(model)


# The gRPC server ---------------------------------------------------------------------------------------------------


def follow_request_limit_on_grpc(args: argparse.Namespace, max_request_bytes: int) -> None:
    """gRPC message limits are --max-request-bytes unless KServe's own flags for them are given.

    KServe 0.21 defaults them to 8 MiB, below the 10 MiB image limit, and `ModelServer.start` builds its GRPCServer
    from KServe's module-level parsed arguments (`kwargs=vars(args)`), not from the ones `image-search` parsed.
    """
    for option in ("grpc_max_receive_message_length", "grpc_max_send_message_length"):
        explicit = getattr(args, option, kserve_model_server.MAX_GRPC_MESSAGE_LENGTH)
        value = explicit if explicit != kserve_model_server.MAX_GRPC_MESSAGE_LENGTH else max_request_bytes
        setattr(kserve_model_server.args, option, value)


def grpc_stopper(server: ModelServer) -> Callable[[], Awaitable[None]]:
    """A coroutine function that stops `server`'s gRPC server (GOAWAY, then its grace period) once `start()` has
    made one; KServe keeps it in the private `_grpc_server`."""

    async def stop() -> None:
        grpc_server = getattr(server, "_grpc_server", None)
        if grpc_server is not None:
            await grpc_server.stop()

    return stop
