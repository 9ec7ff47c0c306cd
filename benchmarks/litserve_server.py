"""The peer: the same search served with LitServe, written as its documentation teaches, on this project's own code.

It does the same work per image as the real server (same decoding and preprocessing, same backbone compiled at
load, same Milvus search), arranged the LitServe way: an API server process takes base64 JSON, LitServe's queue
hands requests to one inference worker process, which decodes each one in `decode_request`, stacks up to
`MAX_BATCH_SIZE` of them and runs one forward pass and one Milvus search per batch.

    python -m benchmarks.litserve_server --port 8001 --milvus-uri data/milvus.db
"""

import argparse
import base64
import binascii
import os
import signal
from dataclasses import dataclass

import litserve as ls
import numpy as np
from fastapi import HTTPException

from predictor.embedding.backbone import DEVICE_CHOICES, Backbone
from predictor.embedding.compile_modes import COMPILE_CHOICES
from predictor.embedding.model_package import default_spec
from predictor.imaging.decoding import ImageLimits, InvalidImage, load_pixels
from predictor.index.collection import Hit, ImageIndex
from predictor.index.milvus import MilvusAccess
from predictor.index.search_options import DEFAULT_CONSISTENCY, SearchOptions

LIMITS = ImageLimits()
# Sized for a small CPU machine: 8 images make one forward pass worth batching without holding the first caller
# long, and 10 ms is what a request waits at most for the batch to fill.
MAX_BATCH_SIZE = 8
BATCH_TIMEOUT_S = 0.01
# LitServe's default 30 s would answer 504 to callers queued behind a slow first (compiling) batch.
REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Query:
    pixels: np.ndarray
    top_k: int


class SearchAPI(ls.LitAPI):
    """One image per request in, its nearest catalogue images out; batched by LitServe."""

    def __init__(self, milvus_uri: str, collection: str = "images", compile_mode: str = "auto") -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
        self.milvus_uri = milvus_uri
        self.collection = collection
        self.compile_mode = compile_mode

    def setup(self, device: str) -> None:
        self.backbone = Backbone(default_spec(), device, "auto", compile_mode=self.compile_mode)
        self.backbone.load()
        # Searches at the real server's consistency, so the comparison is of the serving, not of Milvus waits.
        self.index = ImageIndex.open_for_search(
            MilvusAccess(self.milvus_uri),
            self.collection,
            self.backbone.spec.identity,
            read_consistency=DEFAULT_CONSISTENCY,
        )

    def decode_request(self, request: dict) -> Query:
        # LitServe fails every request of a batch when one of them raises here, as any LitAPI would.
        try:
            data = base64.b64decode(request["image_base64"], validate=True)
            top_k = int(request.get("top_k", 10))
            return Query(load_pixels(data, LIMITS, self.backbone.spec.preprocessing), top_k)
        except (KeyError, TypeError, ValueError, binascii.Error, InvalidImage) as error:
            raise HTTPException(status_code=400, detail=str(error)) from None

    def batch(self, inputs: list[Query]) -> list[Query]:
        return inputs

    def predict(self, queries: list[Query]) -> list[list[Hit]]:
        embeddings = self.backbone.run(np.stack([query.pixels for query in queries])).embeddings
        top_k = max(query.top_k for query in queries)
        found = self.index.search(embeddings, SearchOptions(top_k=top_k))
        return [hits[: query.top_k] for hits, query in zip(found, queries, strict=True)]

    def unbatch(self, output: list[list[Hit]]) -> list[list[Hit]]:
        return output

    def encode_response(self, hits: list[Hit]) -> dict:
        return {"matches": [{"id": hit.id, "score": hit.score, "uri": hit.uri} for hit in hits]}


def build_server(milvus_uri: str, collection: str, device: str, compile_mode: str) -> ls.LitServer:
    """One inference worker on one device: on a CPU a second worker would only split the same cores (and hold a
    second copy of the network); one API server, LitServe's default for one worker."""
    return ls.LitServer(
        SearchAPI(milvus_uri, collection, compile_mode),
        accelerator=device,
        devices=1,
        workers_per_device=1,
        timeout=REQUEST_TIMEOUT_S,
    )


def stop_on_sigterm() -> None:
    """SIGTERM (how benchmarks and Kubernetes stop a server) shuts the server down as Ctrl+C does: LitServe stops its
    worker processes only on KeyboardInterrupt. Its API server processes, forked after this, keep SIGTERM's default."""
    main_pid = os.getpid()

    def stop(signum: int, frame: object) -> None:
        if os.getpid() == main_pid:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stop)


def main() -> None:
    parser = argparse.ArgumentParser(description="The search served with LitServe on the project's code (peer).")
    parser.add_argument("--port", type=int, default=8001, help="HTTP port.")
    parser.add_argument("--milvus-uri", required=True, help="Milvus the real server's index was built in.")
    parser.add_argument("--collection", default="images", help="Collection (or alias) to search.")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto, cpu or cuda.")
    parser.add_argument(
        "--compile", default="auto", choices=COMPILE_CHOICES, help="Compile the network at load, as the server does."
    )
    args = parser.parse_args()
    server = build_server(args.milvus_uri, args.collection, args.device, args.compile)
    stop_on_sigterm()
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
