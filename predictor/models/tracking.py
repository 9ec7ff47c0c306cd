"""One served request, observed: metrics while it runs, one structured log line when it ends.

Errors are classified here, once for every model: a `ServiceError` counts under its status's reason, KServe's own
`InvalidInput` as bad input, anything else as internal.
"""

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest

from predictor.errors import ServiceError
from predictor.logs import log_request
from predictor.metrics import RequestTracker, ServingMetrics


@dataclass
class TrackedRequest:
    tracker: RequestTracker
    images: int = 0


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
                tracker.fail(error.status.reason)
                raise
            except InvalidInput:
                tracker.fail("bad_input")
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
        )
