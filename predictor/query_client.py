"""A V2 client for `image-search query`: the same tritonclient calls any user would write."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL = "image-search"


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


def _infer(url: str, protocol: str, images: np.ndarray, parameters: dict, timeout_s: float):
    from tritonclient.utils import InferenceServerException

    if protocol == "grpc":
        import tritonclient.grpc as client_lib
    else:
        import tritonclient.http as client_lib
    address = _strip_scheme(url)
    try:
        if protocol == "grpc":
            client = client_lib.InferenceServerClient(address)
            tensor = client_lib.InferInput("image", [len(images)], "BYTES")
            tensor.set_data_from_numpy(images)
            outputs = [client_lib.InferRequestedOutput(name) for name in ("ids", "scores", "uris")]
            options = {"client_timeout": timeout_s}
        else:
            client = client_lib.InferenceServerClient(address, connection_timeout=timeout_s, network_timeout=timeout_s)
            tensor = client_lib.InferInput("image", [len(images)], "BYTES")
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
) -> list[list[QueryHit]]:
    """The hits for each image, as the server ranks them; the options are the search API's parameters."""
    images = _read_images(image_paths)
    parameters = {
        "top_k": top_k,
        "offset": offset,
        "min_score": min_score,
        "filter": filter,
        "namespace": namespace,
        "effort": effort,
    }
    parameters = {name: value for name, value in parameters.items() if value is not None}
    result = _infer(url, protocol, images, parameters, timeout_s)
    ids, scores, uris = (result.as_numpy(name) for name in ("ids", "scores", "uris"))
    return [
        [
            QueryHit(_text(ids[row, col]), float(scores[row, col]), _text(uris[row, col]))
            for col in range(ids.shape[1])
            if _text(ids[row, col])
        ]
        for row in range(len(images))
    ]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def print_table(query_path: str, hits: list[QueryHit]) -> None:
    print(f"\n{query_path}")
    print(f"  {'rank':>4}  {'score':>6}  {'id':<14}  uri")
    for rank, hit in enumerate(hits, start=1):
        print(f"  {rank:>4}  {hit.score:6.3f}  {hit.id[:12] + '..':<14}  {hit.uri}")
