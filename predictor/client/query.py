"""A V2 client for `image-search query`: the same tritonclient calls any user would write."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL = "image-search"
# The server image installs the package without this extra: tritonclient and its gevent stay out of it.
MISSING_CLIENT = "the V2 client (tritonclient) is not installed; install the extra: pip install 'image-search[client]'"


class QueryFailed(RuntimeError):
    """The server could not be reached, or refused the query; the message names the server and the reason."""


@dataclass(frozen=True)
class QueryHit:
    id: str
    score: float
    uri: str


def _strip_scheme(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def _read_images(image_paths: list[str]) -> np.ndarray:
    images = []
    for path in image_paths:
        try:
            images.append(Path(path).read_bytes())
        except OSError as error:
            raise QueryFailed(f"cannot read {path}: {error.strerror or error}") from None
    return np.array(images, dtype=np.object_)


# What tritonclient's gRPC says when nothing answers at the address (refused, no route, unknown host).
_UNREACHABLE = ("failed to connect", "dns resolution failed", "connection refused", "name resolution")


def _client_library(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client_lib
        else:
            import tritonclient.http as client_lib
    except ImportError:
        raise QueryFailed(MISSING_CLIENT) from None
    return client_lib


def _infer(
    client_lib,
    url: str,
    protocol: str,
    images: np.ndarray,
    parameters: dict,
    timeout_s: float,
    input_name: str = "image",
):
    from tritonclient.utils import InferenceServerException

    address = _strip_scheme(url)
    try:
        if protocol == "grpc":
            client = client_lib.InferenceServerClient(address)
            tensor = client_lib.InferInput(input_name, [len(images)], "BYTES")
            tensor.set_data_from_numpy(images)
            outputs = [client_lib.InferRequestedOutput(name) for name in ("ids", "scores", "uris")]
            options = {"client_timeout": timeout_s}
        else:
            client = client_lib.InferenceServerClient(address, connection_timeout=timeout_s, network_timeout=timeout_s)
            tensor = client_lib.InferInput(input_name, [len(images)], "BYTES")
            tensor.set_data_from_numpy(images, binary_data=True)
            outputs = [client_lib.InferRequestedOutput(name, binary_data=False) for name in ("ids", "scores", "uris")]
            options = {}
        return client.infer(MODEL, [tensor], outputs=outputs, parameters=parameters, **options)
    except InferenceServerException as error:
        status = str(error.status() or "").removeprefix("StatusCode.")
        message = error.message() or str(error)
        if status == "UNAVAILABLE" and any(sign in message.lower() for sign in _UNREACHABLE):
            raise QueryFailed(f"cannot reach the server at {address} over gRPC: {message}") from None
        if status in ("DEADLINE_EXCEEDED", "504"):
            raise QueryFailed(f"the server at {address} did not answer in time: {message}") from None
        if status in ("UNAVAILABLE", "503"):
            raise QueryFailed(f"the server at {address} cannot answer now: {message}") from None
        raise QueryFailed(f"the server at {address} refused the query: {message}") from None
    except (OSError, TimeoutError) as error:
        # tritonclient.http connects through gevent, whose refusals and DNS failures are plain socket errors.
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise QueryFailed(f"cannot reach the server at {address} over HTTP: {reason}") from None


def search(
    url: str,
    protocol: str,
    image_paths: list[str],
    top_k: int,
    timeout_s: float = 60.0,
    *,
    offset: int = 0,
    min_score: float | None = None,
    filter: str | None = None,
    namespace: str | None = None,
    effort: int | None = None,
    diversity: float | None = None,
    group_by: str | None = None,
    group_size: int | None = None,
    texts: list[str] | None = None,
) -> list[list[QueryHit]]:
    """The hits for each image (or each of `texts`, for a model with a text tower), as the server ranks them; the
    options are the search API's parameters."""
    client_lib = _client_library(protocol)
    if texts:
        queries, input_name = np.array([text.encode("utf-8") for text in texts], dtype=np.object_), "text"
    else:
        queries, input_name = _read_images(image_paths), "image"
    parameters = {
        "top_k": top_k,
        "offset": offset,
        "min_score": min_score,
        "filter": filter,
        "namespace": namespace,
        "effort": effort,
        "diversity": diversity,
        "group_by": group_by,
        "group_size": group_size,
    }
    parameters = {name: value for name, value in parameters.items() if value is not None}
    result = _infer(client_lib, url, protocol, queries, parameters, timeout_s, input_name)
    ids, scores, uris = (result.as_numpy(name) for name in ("ids", "scores", "uris"))
    return [
        [
            QueryHit(_text(ids[row, col]), float(scores[row, col]), _text(uris[row, col]))
            for col in range(ids.shape[1])
            if _text(ids[row, col])
        ]
        for row in range(len(queries))
    ]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def print_table(query_path: str, hits: list[QueryHit]) -> None:
    print(f"\n{query_path}")
    print(f"  {'rank':>4}  {'score':>6}  {'id':<14}  uri")
    for rank, hit in enumerate(hits, start=1):
        print(f"  {rank:>4}  {hit.score:6.3f}  {hit.id[:12] + '..':<14}  {hit.uri}")
