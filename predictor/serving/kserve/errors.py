"""One mapping of typed errors for every transport, and KServe's own client errors logged without tracebacks.

A `predictor.errors.ServiceError` answers REST (V1 and V2) with its `status.http` and `{"error": message}`, and gRPC
with its `status.grpc` and the message. KServe's own client errors (a body that is not JSON, an unknown model, a body
FastAPI's schema refuses) become typed errors too, and so do FastAPI's own answers (an unknown route or method), which
are `{"detail": ...}` otherwise.
"""

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import JSONResponse
from grpc_interceptor.exceptions import GrpcException
from kserve import errors as kserve_errors
from starlette.exceptions import HTTPException

from predictor.errors import InvalidRequest, ServiceError, UnknownModel
from predictor.observability.logs import log_refusal


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


async def service_error_handler(request: Request, error: ServiceError) -> JSONResponse:
    # An error raised inside a model call was logged with its request; one raised before (decoding, routing) was not.
    log_refusal(error, _rest_protocol(request.url.path), request.path_params.get("model_name", ""), request.headers)
    return error_response(error)


def validation_problems(errors: Sequence[Any]) -> str:
    """The first few problems pydantic found in a body, as `field.path: message`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem.get('loc', ()) if part != 'body') or 'body'}: {problem.get('msg')}"
        for problem in errors[:3]
    )


def validation_error_handler(find_model: Callable[[str], Any]) -> Callable[..., Awaitable[JSONResponse]]:
    """FastAPI's own refusal of a body (422 with a list of problems) as a 400; `find_model` raises `UnknownModel`,
    so that an unknown model is still the first thing wrong, as it is for every other request."""

    async def handle(request: Request, error: RequestValidationError) -> JSONResponse:
        model = request.path_params.get("model_name")
        try:
            if model:
                find_model(model)
        except UnknownModel as unknown:
            return await service_error_handler(request, unknown)
        problems = validation_problems(error.errors())
        return await service_error_handler(
            request, InvalidRequest(f"the request body is not a valid request: {problems}")
        )

    return handle


async def http_error_handler(request: Request, error: HTTPException) -> JSONResponse:
    """FastAPI's own answers (no such route, a method the route does not take) in the protocol's error form."""
    if error.status_code == 404 and error.detail == "Not Found":
        message = f"no such path: {request.url.path} (the V2 API is under /v2, the V1 API under /v1/models)"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(error.detail)
    return JSONResponse(status_code=error.status_code, content={"error": message}, headers=error.headers)


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
