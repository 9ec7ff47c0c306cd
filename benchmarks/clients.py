"""Senders for the load generator: tritonclient over gRPC and REST (binary data) for this server, plain HTTP for the
naive server and the LitServe peer. Each builds its requests once from the workload's bytes, so the timed loop only
sends and waits.
"""

import base64
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import orjson

from benchmarks.loadgen import Send

MODEL = "image-search"
OUTPUTS = ("ids", "scores", "uris")


def _groups(images: list[bytes], images_per_request: int) -> list[np.ndarray]:
    """Requests of `images_per_request` consecutive images; as many distinct requests as there are images."""
    return [
        np.array([images[(start + i) % len(images)] for i in range(images_per_request)], dtype=np.object_)
        for start in range(0, len(images) * images_per_request, images_per_request)
    ][: len(images)]


@contextlib.asynccontextmanager
async def _triton_sender(client, requests: list, outputs: list) -> AsyncIterator[Send]:
    """Both tritonclient transports: send a prepared request variant, close the client when done."""

    async def send(variant: int) -> None:
        await client.infer(MODEL, requests[variant], outputs=outputs)

    try:
        yield send
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def grpc_sender(address: str, images: list[bytes], images_per_request: int = 1) -> AsyncIterator[Send]:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(address)
    requests = []
    for group in _groups(images, images_per_request):
        tensor = grpcclient.InferInput("image", [len(group)], "BYTES")
        tensor.set_data_from_numpy(group)
        requests.append([tensor])
    outputs = [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]
    async with _triton_sender(client, requests, outputs) as send:
        yield send


@contextlib.asynccontextmanager
async def rest_sender(url: str, images: list[bytes], images_per_request: int = 1) -> AsyncIterator[Send]:
    import tritonclient.http.aio as httpclient

    client = httpclient.InferenceServerClient(url.split("://", 1)[-1], conn_limit=256)
    requests = []
    for group in _groups(images, images_per_request):
        tensor = httpclient.InferInput("image", [len(group)], "BYTES")
        tensor.set_data_from_numpy(group, binary_data=True)
        requests.append([tensor])
    # KServe answers BYTES outputs as JSON; the request side is what carries the images in binary.
    outputs = [httpclient.InferRequestedOutput(name, binary_data=False) for name in OUTPUTS]
    async with _triton_sender(client, requests, outputs) as send:
        yield send


@contextlib.asynccontextmanager
async def naive_sender(url: str, images: list[bytes]) -> AsyncIterator[Send]:
    """The request the naive server's tutorial teaches: JSON with the image as base64 text."""
    bodies = [orjson.dumps({"image_base64": base64.b64encode(image).decode("ascii")}) for image in images]
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def send(variant: int) -> None:
            async with session.post(f"{url}/predict", data=bodies[variant], headers=headers) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")

        yield send


def litserve_sender(url: str, images: list[bytes]) -> contextlib.AbstractAsyncContextManager[Send]:
    """The LitServe peer takes the body LitServe's image examples send, the naive server's: the image as base64 text
    in JSON, at the same /predict path."""
    return naive_sender(url, images)
