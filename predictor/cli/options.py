"""The flags that make the settings: each with its environment fallback and help; the settings check themselves."""

import argparse
import os
from pathlib import Path

from predictor import environment
from predictor.embedding.compile_modes import COMPILE_CHOICES
from predictor.imaging.decoding import ImageLimits
from predictor.index.filter_columns import MAX_FILTER_COLUMNS, parse_filter_columns
from predictor.index.search_options import CONSISTENCY_LEVELS, DEFAULT_CONSISTENCY, SearchSettings
from predictor.index.settings import (
    DEFAULT_COLLECTION,
    DEFAULT_MILVUS_TIMEOUT_S,
    DEFAULT_MILVUS_URI,
    MilvusSettings,
    is_local_file,
)
from predictor.index.vector_index import DEFAULT_INDEX_TYPE, INDEX_KINDS, VectorIndex, parse_params
from predictor.serving.request_size import default_max_request_bytes
from predictor.serving.settings import ServeSettings
from predictor.ui.settings import (
    DEFAULT_THUMBNAIL_CACHE_BYTES,
    DEFAULT_THUMBNAIL_SIZE,
    UiSettings,
    parse_base_url,
)

_TRUE = ("1", "true", "yes", "on")


def add_milvus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--milvus-uri",
        default=environment.milvus_uri(DEFAULT_MILVUS_URI),
        help="Milvus to use: a milvus-lite file (path ending in .db) or a server URI such as http://milvus:19530. "
        f"Env: {environment.MILVUS_URI} ({environment.LEGACY_MILVUS_URI} is accepted too). The token, if any, is "
        f"read from env {environment.MILVUS_TOKEN}.",
    )
    parser.add_argument(
        "--collection",
        default=os.environ.get(environment.COLLECTION, DEFAULT_COLLECTION),
        help="Stable alias users search (default images); each model version keeps its vectors in its own "
        "collection <alias>__<model>__<version>. Env: IMAGE_SEARCH_COLLECTION.",
    )
    parser.add_argument(
        "--index-type",
        default=os.environ.get(environment.INDEX_TYPE, DEFAULT_INDEX_TYPE),
        choices=list(INDEX_KINDS),
        help=f"Vector index of a new collection (default {DEFAULT_INDEX_TYPE}; an existing collection keeps its own). "
        "Env: IMAGE_SEARCH_INDEX_TYPE.",
    )
    parser.add_argument(
        "--index-params",
        default=os.environ.get(environment.INDEX_PARAMS, ""),
        help="Build parameters of a new collection's index, NAME=INTEGER,... (IVF_*: nlist, default 1024; HNSW: M, "
        "efConstruction); unset ones take the measured defaults. Env: IMAGE_SEARCH_INDEX_PARAMS.",
    )
    parser.add_argument(
        "--filter-columns",
        default=os.environ.get(environment.FILTER_COLUMNS, ""),
        help="Metadata keys a new collection also keeps in typed columns, KEY:string or KEY:int, comma-separated "
        f"(at most {MAX_FILTER_COLUMNS}): filters on them then skip parsing each row's JSON, 3 to 5 times faster "
        "at 200,000 rows on a Milvus server. Rows whose value has another type are refused. An existing collection "
        "keeps its own (`reindex --filter-columns` changes them). Env: IMAGE_SEARCH_FILTER_COLUMNS.",
    )
    parser.add_argument(
        "--search-params",
        default=os.environ.get(environment.SEARCH_PARAMS, ""),
        help="Default search effort, NAME=INTEGER (IVF_*: nprobe, default 32, at most nlist; HNSW: ef, default 64). "
        "Env: IMAGE_SEARCH_SEARCH_PARAMS.",
    )
    parser.add_argument(
        "--milvus-timeout-s",
        type=float,
        default=os.environ.get(environment.MILVUS_TIMEOUT, DEFAULT_MILVUS_TIMEOUT_S),
        help=f"Longest wait for one Milvus call that has no shorter deadline of its own (default "
        f"{DEFAULT_MILVUS_TIMEOUT_S:g}); a call Milvus never answers then fails with one line instead of hanging. "
        "Env: IMAGE_SEARCH_MILVUS_TIMEOUT_S.",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        default=os.environ.get(environment.MODEL_DIR) or None,
        help="Model package directory (model.json + weights); KServe mounts storageUri at /mnt/models. "
        "Without it the bundled EfficientNet-Lite0 is used. Env: MODEL_DIR.",
    )
    parser.add_argument(
        "--device",
        default=os.environ.get(environment.DEVICE, "auto"),
        help="auto (CUDA when a GPU is visible), cpu, cuda or cuda:N. Env: IMAGE_SEARCH_DEVICE.",
    )
    parser.add_argument(
        "--precision",
        default=os.environ.get(environment.PRECISION, "auto"),
        help="auto (the fastest the hardware runs natively and the model package allows), fp32, bf16, int8 (CPU) "
        "or fp16 (CUDA). A reduced precision whose embeddings of fixed probe photos fall below cosine 0.995 "
        "against fp32 is replaced by fp32 at load, and the log says why. Env: IMAGE_SEARCH_PRECISION.",
    )
    parser.add_argument(
        "--compile",
        choices=COMPILE_CHOICES,
        default=os.environ.get(environment.COMPILE, "auto"),
        help="Compile the network for the CPU with Inductor, after which the forward pass runs about 1.4x faster "
        "at fp32 and 1.8x at bf16. The server serves the uncompiled network from load and swaps the compiled one in "
        "once it has passed the probe (tens of seconds later, in the background); batch commands compile before "
        "their first batch. Needs a C++ compiler (g++); a network that cannot be compiled, or whose compiled "
        "embeddings fail the probe, runs uncompiled and the log says why. auto: the server compiles, `index` and "
        "`eval` from 5,000 images on; on: always; off: never. Env: IMAGE_SEARCH_COMPILE.",
    )


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    add_milvus_arguments(parser)
    add_model_arguments(parser)
    limits = ImageLimits()
    parser.add_argument("--max-batch-size", type=int, default=32, help="Most images embedded in one forward pass.")
    parser.add_argument(
        "--max-batch-delay-ms",
        type=float,
        default=5.0,
        help="Longest an image waits for others to fill its batch when the device is idle.",
    )
    parser.add_argument(
        "--max-image-bytes", type=int, default=limits.max_bytes, help="Largest encoded image accepted, in bytes."
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=limits.max_pixels,
        help="Largest image accepted, in pixels (width x height); larger ones are refused before decoding.",
    )
    parser.add_argument(
        "--max-images-per-request", type=int, default=limits.max_images, help="Most images in one request."
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        help="Largest request body (REST) and message (gRPC), refused with 413 / RESOURCE_EXHAUSTED before it is "
        "read. Default: enough for --max-images-per-request images at --max-image-bytes as base64, capped at 64 MiB "
        f"but never below one such image ({default_max_request_bytes(limits)} with the default limits).",
    )
    parser.add_argument(
        "--forward-process",
        choices=("on", "off"),
        default=os.environ.get(environment.FORWARD_PROCESS, "on"),
        help="on: on a CPU, the image network runs in a child process of its own once it has loaded there (the "
        "server serves its own uncompiled network until then), so that the forward pass never waits for the "
        "Python threads that parse, decode and answer requests. Not for a GPU or a package with a text tower, "
        "which always run in the server's process. Costs the memory of a second Python process with torch "
        "(about 0.3 GB). Env: IMAGE_SEARCH_FORWARD_PROCESS.",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="After SIGTERM, keep serving this long with readiness false, so load balancers stop sending first "
        "(on Kubernetes the chart's preStop pause does this instead).",
    )
    parser.add_argument(
        "--shutdown-grace-seconds",
        type=float,
        default=30.0,
        help="After the drain pause, the longest requests in flight get to finish before the server exits; at "
        "least --request-timeout-s.",
    )
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=30.0,
        help="The longest a request may take once the server has read it; one still waiting (for the device or for "
        "Milvus) is given up and answered 504 / DEADLINE_EXCEEDED. A gRPC client's own shorter deadline wins.",
    )


def vector_index(args: argparse.Namespace) -> VectorIndex:
    return VectorIndex(
        args.index_type,
        parse_params(args.index_params, "--index-params"),
        parse_params(args.search_params, "--search-params"),
    )


def check_lite_file_exists(uri: str) -> None:
    """Refuse a milvus-lite path with nothing there, for a command that does not make the collection: milvus-lite
    would make an empty file, and the command would report an empty catalogue where the path was mistyped."""
    if is_local_file(uri) and not Path(uri).exists():
        raise ValueError(
            f"--milvus-uri {uri}: there is no milvus-lite file there; "
            f"index images into it first: image-search index SOURCE --milvus-uri {uri}"
        )


def milvus_settings(args: argparse.Namespace) -> MilvusSettings:
    return MilvusSettings(
        uri=args.milvus_uri,
        collection=args.collection,
        token=environment.milvus_token(),
        index=vector_index(args),
        call_timeout_s=args.milvus_timeout_s,
        filter_columns=parse_filter_columns(args.filter_columns),
    )


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    if args.forward_process not in ("on", "off"):
        raise ValueError(f"--forward-process must be on or off, got {args.forward_process!r}")
    return ServeSettings(
        milvus=milvus_settings(args),
        model_dir=args.model_dir,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        forward_process=args.forward_process == "on",
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        limits=ImageLimits(
            max_bytes=args.max_image_bytes,
            max_pixels=args.max_image_pixels,
            max_images=args.max_images_per_request,
        ),
        max_request_bytes=args.max_request_bytes,
        drain_s=args.drain_seconds,
        shutdown_grace_s=args.shutdown_grace_seconds,
        request_timeout_s=args.request_timeout_s,
    )


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace-header",
        default=os.environ.get(environment.NAMESPACE_HEADER) or None,
        help="Take each request's namespace from this header (set by a gateway after it authenticates the caller); "
        "a namespace parameter that disagrees with it is refused. Env: IMAGE_SEARCH_NAMESPACE_HEADER.",
    )
    parser.add_argument(
        "--search-workers",
        type=int,
        default=2,
        help="Milvus searches in flight at once; queries waiting meanwhile with equal options share one search.",
    )
    parser.add_argument(
        "--search-consistency",
        default=os.environ.get(environment.SEARCH_CONSISTENCY, DEFAULT_CONSISTENCY),
        choices=CONSISTENCY_LEVELS,
        help=f"Milvus consistency level of searches and id lookups (default {DEFAULT_CONSISTENCY}). Bounded searches "
        "what Milvus holds now without waiting for its next time tick (about 200 ms on a server); rows that "
        "`image-search index` has written are searchable once it returns. Strong makes every search wait. "
        "Env: IMAGE_SEARCH_SEARCH_CONSISTENCY.",
    )


def search_settings(args: argparse.Namespace) -> SearchSettings:
    return SearchSettings(
        namespace_header=args.namespace_header,
        search_workers=args.search_workers,
        consistency=args.search_consistency,
    )


def add_ui_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ui",
        action="store_true",
        default=os.environ.get(environment.UI, "").lower() in _TRUE,
        help="Serve the search page at /ui/ on the REST port, with thumbnails of indexed images. Env: IMAGE_SEARCH_UI.",
    )
    parser.add_argument(
        "--thumbnail-size",
        type=int,
        default=DEFAULT_THUMBNAIL_SIZE,
        help="Longest side of a thumbnail on the search page, in pixels.",
    )
    parser.add_argument(
        "--thumbnail-cache-bytes",
        type=int,
        default=DEFAULT_THUMBNAIL_CACHE_BYTES,
        help="Memory for recently served thumbnails (least recently used go first); 0 renders every one afresh.",
    )
    parser.add_argument(
        "--thumbnail-base-url",
        action="append",
        default=[],
        metavar="PREFIX=URL",
        help="Show stored images whose uri starts with PREFIX from URL plus the rest of the uri (the browser loads "
        "them from there), e.g. s3://bucket/images/=https://cdn.example.com/images/. Repeatable. Without one, "
        "images this server cannot read (s3://, gs://, https://) show as links or placeholders.",
    )


def ui_settings(args: argparse.Namespace) -> UiSettings:
    return UiSettings(
        enabled=args.ui,
        thumbnail_size=args.thumbnail_size,
        thumbnail_cache_bytes=args.thumbnail_cache_bytes,
        base_urls=tuple(parse_base_url(text) for text in args.thumbnail_base_url),
    )
