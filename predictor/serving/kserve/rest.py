"""REST: the binary data extension with BYTES kept as bytes, versioned paths, error handlers on KServe's app, the V2
infer route, and Triton's model configuration and statistics extensions (`/config`, `/stats`)."""

import re
from collections.abc import Callable
from typing import Any

import orjson
import pydantic
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import Response
from kserve import ModelServer
from kserve import model_server as kserve_model_server
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from starlette.exceptions import HTTPException

from predictor.errors import InvalidRequest, ModelVersionNotFound, ServiceError
from predictor.serving.kserve.errors import (
    error_response,
    http_error_handler,
    service_error_handler,
    validation_error_handler,
    validation_problems,
)

INFERENCE_HEADER_LENGTH = "inference-header-content-length"


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


_VERSIONED_PATH = re.compile(
    r"^/v2/models/(?P<model>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/infer|/ready|/config|/stats)?$"
)


class VersionedPaths:
    """ASGI middleware: `/v2/models/<m>/versions/<v>[/infer|/ready|/config|/stats]` reaches `/v2/models/<m>[...]`
    for the version being served, and answers 404 for any other; KServe's own routes for these paths answer 501."""

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


def register_rest(server: ModelServer, dataplane: Any) -> None:
    app = kserve_model_server.app

    def version_of(name: str) -> str | None:
        model = server.registered_models.get_model(name)
        return getattr(model, "version", None) if model else None

    async def model_metadata(model_name: str) -> dict:
        # KServe's route validates against a schema without "parameters" and drops them.
        return await dataplane.model_metadata(model_name)

    async def model_configuration(model_name: str) -> dict:
        return dataplane.model_config(model_name)

    async def model_statistics(model_name: str) -> dict:
        return dataplane.model_statistics(model_name)

    async def all_statistics() -> dict:
        return dataplane.model_statistics()

    async def infer(model_name: str, raw_request: Request) -> Response:
        return await _infer(dataplane, model_name, raw_request)

    app.add_exception_handler(ServiceError, service_error_handler)
    # FastAPI answers a body its schema refuses with 422 and a list of problems; this is bad input like any other.
    app.add_exception_handler(RequestValidationError, validation_error_handler(dataplane.get_model_from_registry))
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_middleware(VersionedPaths, version_of=version_of)
    # Routes added before KServe adds its own (in ModelServer.start) are matched first.
    routes = [
        ("/v2/models/stats", all_statistics, "GET"),
        ("/v2/models/{model_name}", model_metadata, "GET"),
        ("/v2/models/{model_name}/config", model_configuration, "GET"),
        ("/v2/models/{model_name}/stats", model_statistics, "GET"),
        ("/v2/models/{model_name}/infer", infer, "POST"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)


_JSON_TYPES = ("application/json", "application/cloudevents+json", "application/ld+json")


async def _infer(dataplane: Any, model_name: str, raw_request: Request) -> Response:
    """KServe's V2 infer route, in this order: the model (404), then the body (400); and the answer as `to_rest` made
    it. KServe's own route validates its answer into a model that writes absent `parameters` as `null`, which the
    protocol does not allow, and validates the body before it looks for the model."""
    dataplane.get_model_from_registry(model_name)
    headers = dict(raw_request.headers)
    body: bytes | InferenceRequest = await raw_request.body()
    content_type = headers.get("content-type", "").split(";")[0].strip()
    if INFERENCE_HEADER_LENGTH not in headers and content_type in _JSON_TYPES:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidRequest(f"the request body is not valid JSON: {error}") from None
        try:
            body = InferenceRequest.model_validate(payload)
        except pydantic.ValidationError as error:
            problems = validation_problems(error.errors())
            raise InvalidRequest(f"the request body is not a valid request: {problems}") from None
    infer_request, _ = dataplane.decode(body, headers, protocol_version="v2", model_name=model_name)
    response, response_headers = await dataplane.infer(model_name=model_name, request=infer_request, headers=headers)
    response, encoded_headers = dataplane.encode(
        model_name=model_name, response=response, headers=headers, req_attributes={}
    )
    response_headers = {**response_headers, **encoded_headers}
    for header in ("content-length", "content-type"):
        response_headers.pop(header, None)
    if isinstance(response, bytes):
        return Response(response, headers=response_headers, media_type="application/octet-stream")
    body_json = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body_json, 200, response_headers, "application/json")
