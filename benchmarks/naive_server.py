"""The baseline: the FastAPI server a tutorial teaches, one image per request, with this project's model and search.

It does the same work per image as the real server (same decoding and preprocessing, same backbone, same Milvus
search), but the way a first version is usually written: base64 JSON in, a blocking handler per request in
FastAPI's thread pool, no batching, a forward pass and a search call per image.

    python -m benchmarks.naive_server --port 8000 --milvus-uri data/milvus.db
"""

import argparse
import base64
import binascii
import contextlib
import time
from collections.abc import AsyncIterator

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from predictor.embedding.backbone import Backbone
from predictor.embedding.model_package import default_spec
from predictor.imaging.decoding import ImageLimits, InvalidImage, load_pixels
from predictor.index.collection import ImageIndex
from predictor.index.milvus import MilvusAccess
from predictor.index.search_options import DEFAULT_CONSISTENCY, SearchOptions

LIMITS = ImageLimits()


class PayloadRequest(BaseModel):
    image_base64: str
    top_k: int = 10


class Match(BaseModel):
    id: str
    score: float
    uri: str


class SearchResponse(BaseModel):
    matches: list[Match]
    latency_ms: float


def create_app(milvus_uri: str, collection: str = "images", device: str = "auto") -> FastAPI:
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        backbone = Backbone(default_spec(), device, "auto", compile_mode="auto")
        backbone.load()
        # Searches at the real server's consistency, so the comparison is of the serving, not of Milvus waits.
        index = ImageIndex.open_for_search(
            MilvusAccess(milvus_uri), collection, backbone.spec.identity, read_consistency=DEFAULT_CONSISTENCY
        )
        state.update(backbone=backbone, index=index)
        yield
        index.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    def health() -> dict:
        return {"ready": bool(state)}

    @app.post("/predict")
    def predict(payload: PayloadRequest) -> SearchResponse:
        started = time.perf_counter()
        try:
            data = base64.b64decode(payload.image_base64, validate=True)
            pixels = load_pixels(data, LIMITS, state["backbone"].spec.preprocessing)
        except (binascii.Error, InvalidImage) as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        embedding = state["backbone"].run(pixels[np.newaxis]).embeddings
        hits = state["index"].search(embedding, SearchOptions(top_k=payload.top_k))[0][: payload.top_k]
        return SearchResponse(
            matches=[Match(id=hit.id, score=hit.score, uri=hit.uri) for hit in hits],
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Naive one-image-per-request FastAPI search server (baseline).")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port.")
    parser.add_argument("--milvus-uri", required=True, help="Milvus the real server's index was built in.")
    parser.add_argument("--collection", default="images", help="Collection (or alias) to search.")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    args = parser.parse_args()
    uvicorn.run(create_app(args.milvus_uri, args.collection, args.device), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
