"""A V2 client for `image-search query`: the same tritonclient calls any user would write."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL = "image-search"


@dataclass(frozen=True)
class QueryHit:
    id: str
    score: float
    uri: str


def _strip_scheme(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def search(url: str, protocol: str, image_paths: list[str], top_k: int) -> list[list[QueryHit]]:
    images = np.array([Path(path).read_bytes() for path in image_paths], dtype=np.object_)
    if protocol == "grpc":
        import tritonclient.grpc as client_lib
    else:
        import tritonclient.http as client_lib
    client = client_lib.InferenceServerClient(_strip_scheme(url))
    tensor = client_lib.InferInput("image", [len(images)], "BYTES")
    if protocol == "grpc":
        tensor.set_data_from_numpy(images)
        outputs = [client_lib.InferRequestedOutput(name) for name in ("ids", "scores", "uris")]
    else:
        tensor.set_data_from_numpy(images, binary_data=True)
        outputs = [client_lib.InferRequestedOutput(name, binary_data=False) for name in ("ids", "scores", "uris")]
    result = client.infer(MODEL, [tensor], outputs=outputs, parameters={"top_k": top_k})
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
