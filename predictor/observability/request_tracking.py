"""One served request, observed: metrics while it runs, one structured log line when it ends.

Errors are classified here, once for every model: a `ServiceError` counts under its status's reason, KServe's own
`InvalidInput` as bad input, anything else as internal. A request whose client gave up (cancelled, or past the
client's own deadline) is not an error: it counts and is logged as `cancelled`, with status 499.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest

from predictor.errors import ServiceError
from predictor.observability.logs import log_request
from predictor.observability.metrics import CANCELLED, RequestTracker, ServingMetrics

# The status logged for a request whose client gave up first (nginx's "client closed request"); no client sees it.
CLIENT_CLOSED_REQUEST = 499


@dataclass
class TrackedRequest:
    tracker: RequestTracker
    images: int = 0
    error: str | None = None
    status: int = 200


def _protocol(payload: object) -> str:
    if isinstance(payload, InferRequest):
        return "v2-grpc" if payload.from_grpc else "v2-rest"
    return "v1"


def _request_id(payload: object, headers: dict[str, str] | None) -> str:
    if headers and headers.get("x-request-id"):
        return headers["x-request-id"]
    if isinstance(payload, InferRequest) and payload.id:
        return str(payload.id)
    return str(uuid.uuid4())


@contextlib.contextmanager
def tracked(
    metrics: ServingMetrics, model: str, model_version: str, payload: object, headers: dict[str, str] | None
) -> Iterator[TrackedRequest]:
    started = time.perf_counter()
    request = None
    try:
        with metrics.request() as tracker:
            request = TrackedRequest(tracker)
            try:
                yield request
            except ServiceError as error:
                if error.status.reason == CANCELLED:
                    tracker.cancel()
                    request.error, request.status = error.message, CLIENT_CLOSED_REQUEST
                else:
                    tracker.fail(error.status.reason)
                    request.error, request.status = error.message, error.status.http
                error.logged = True
                raise
            except InvalidInput as error:
                tracker.fail("bad_input")
                request.error, request.status = str(error), 400
                raise
            except asyncio.CancelledError:
                tracker.cancel()
                request.error, request.status = "the client went away before the answer", CLIENT_CLOSED_REQUEST
                raise
            except Exception as error:
                request.error, request.status = f"{type(error).__name__}: {error}", 500
                raise
    finally:
        outcome = request.tracker.outcome if request else "internal"
        log_request(
            request_id=_request_id(payload, headers),
            model=model,
            model_version=model_version,
            protocol=_protocol(payload),
            images=request.images if request else 0,
            latency_ms=(time.perf_counter() - started) * 1000,
            outcome=outcome,
            error_reason=None if outcome == "success" else outcome,
            error=request.error if request else None,
            status=request.status if request else 500,
        )
