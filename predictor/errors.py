"""Every typed error a request can hit, and the status it gets on every transport.

One table: each error class carries its `Status` (HTTP status, gRPC status code name, metrics reason), and
`predictor/serving/kserve/` turns it into the answer of REST V1, REST V2 and gRPC alike. To add an error, subclass
`ServiceError` with a `status`, for example::

    class QuotaExceeded(ServiceError):
        status = Status(429, "RESOURCE_EXHAUSTED", "bad_input")

This module imports nothing of KServe or gRPC, so the Milvus access layer and the CLI can raise these too.
"""

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "BAD_INPUT",
    "IndexUnavailable",
    "InvalidRequest",
    "ModelUnavailable",
    "ModelVersionNotFound",
    "RequestTimedOut",
    "RequestTooLarge",
    "SearchBacklogFull",
    "ServiceError",
    "Status",
    "ThumbnailNotFound",
    "UnknownId",
    "UnknownModel",
]


@dataclass(frozen=True)
class Status:
    """What one kind of failure is called on each transport.

    `grpc` is the name of a `grpc.StatusCode` member; `reason` is the `reason` label of `image_search_errors_total`
    (one of `predictor.observability.metrics.ERROR_REASONS`) under which a request that fails this way is counted.
    """

    http: int
    grpc: str
    reason: str


BAD_INPUT = Status(400, "INVALID_ARGUMENT", "bad_input")


class ServiceError(RuntimeError):
    """An error with a meaning a client can act on. A RuntimeError, so the CLI's one-line error report covers it."""

    status: ClassVar[Status] = Status(500, "INTERNAL", "internal")
    # Set once the request's log line has recorded this error, so the transport that answers does not log it again.
    logged: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(ServiceError):
    """The request itself is wrong (a bad image, parameter, input or filter); the message names the problem."""

    status = BAD_INPUT


class UnknownId(InvalidRequest):
    """A more-like-this query named an id that the namespace does not hold. A 400 like any other bad input: the
    request cannot succeed as sent, and a 404 on `/infer` would read as "no such model" to clients and gateways."""


class ModelVersionNotFound(ServiceError):
    """A client pinned a model version that this server does not run."""

    status = Status(404, "NOT_FOUND", "bad_input")


class UnknownModel(ServiceError):
    """The request names a model this server does not serve."""

    status = Status(404, "NOT_FOUND", "bad_input")


class RequestTooLarge(ServiceError):
    """The request is larger than `--max-request-bytes`; refused before it is read (gRPC's own limit says the same)."""

    status = Status(413, "RESOURCE_EXHAUSTED", "bad_input")


class ModelUnavailable(ServiceError):
    """The model cannot answer yet (its collection is missing, empty or unreachable); the message says why."""

    status = Status(503, "UNAVAILABLE", "milvus_unavailable")


class IndexUnavailable(ServiceError):
    """Milvus cannot be reached or answered with a server-side error: retry, or go elsewhere."""

    status = Status(503, "UNAVAILABLE", "milvus_unavailable")


class SearchBacklogFull(IndexUnavailable):
    """So many queries already wait for a slow Milvus that another would only time out behind them."""


class RequestTimedOut(ServiceError):
    """The request did not finish within `--request-timeout-s` or the gRPC client's own deadline, whichever is
    shorter; whatever it still waited for (the device, Milvus) was given up."""

    status = Status(504, "DEADLINE_EXCEEDED", "timeout")


class ClientGaveUp(RequestTimedOut):
    """The gRPC client's own deadline passed first: the client stopped waiting, so the request counts as cancelled
    (`image_search_requests_total{outcome="cancelled"}`), not as the server's timeout or error."""

    status = Status(504, "DEADLINE_EXCEEDED", "cancelled")


class ImageNotFound(ServiceError):
    """The search page asked for the copies of an id the namespace does not hold."""

    status = Status(404, "NOT_FOUND", "bad_input")


class ThumbnailNotFound(ServiceError):
    """The search page asked for a thumbnail this server cannot give: an id the namespace does not hold (whether or not
    another namespace holds it), or one whose file it cannot read or decode."""

    status = Status(404, "NOT_FOUND", "bad_input")
