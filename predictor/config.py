"""Settings shared by the server and the CLI, read from flags with environment fallbacks and checked at start-up."""

import argparse
import os
from dataclasses import dataclass, field

from predictor import environment
from predictor.images import ImageLimits
from predictor.request_size import default_max_request_bytes, largest_image_request_bytes
from predictor.vector_index import DEFAULT_INDEX_TYPE, INDEX_KINDS, VectorIndex, parse_params

# --compile (predictor/compilation.py): `on` compiles the network on a CPU, `off` never, and `auto` where it pays: a
# server always, a batch command from predictor.compilation.WORTH_COMPILING_IMAGES images.
COMPILE_CHOICES = ("auto", "on", "off")

DEFAULT_MILVUS_URI = "data/milvus.db"
DEFAULT_COLLECTION = "images"


@dataclass(frozen=True)
class MilvusSettings:
    uri: str
    collection: str
    token: str | None = None
    index: VectorIndex = field(default_factory=VectorIndex)

    def __post_init__(self) -> None:
        if not self.uri:
            raise ValueError("--milvus-uri must not be empty: give a file path ending in .db or http://host:19530")
        if "://" not in self.uri and not self.uri.endswith(".db"):
            raise ValueError(f"--milvus-uri {self.uri!r}: a local milvus-lite file must end in .db")
        if not self.collection:
            raise ValueError("--collection must not be empty")


@dataclass(frozen=True)
class ServeSettings:
    milvus: MilvusSettings
    model_dir: str | None
    device: str
    max_batch_size: int
    max_batch_delay_ms: float
    limits: ImageLimits
    precision: str = "auto"
    compile: str = "auto"
    default_top_k: int = 10
    max_top_k: int = 100
    # None derives it from `limits`; see request_size.py.
    max_request_bytes: int | None = None
    # What happens on SIGTERM; see drain.py.
    drain_s: float = 0.0
    shutdown_grace_s: float = 30.0
    # The longest a request may take, whatever it waits for (the device, Milvus); see models/base.py.
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_request_bytes is None:
            object.__setattr__(self, "max_request_bytes", default_max_request_bytes(self.limits))
        one_image = largest_image_request_bytes(self.limits)
        if self.max_request_bytes < one_image:
            raise ValueError(
                f"--max-request-bytes {self.max_request_bytes} cannot hold one image at --max-image-bytes "
                f"{self.limits.max_bytes} (a base64 request of {one_image} bytes): raise it or lower --max-image-bytes"
            )
        if not 0 <= self.drain_s <= 3600:
            raise ValueError(f"--drain-seconds must be between 0 and 3600, got {self.drain_s}")
        if not 0 < self.shutdown_grace_s <= 3600:
            raise ValueError(f"--shutdown-grace-seconds must be above 0 and at most 3600, got {self.shutdown_grace_s}")
        if not 0 < self.request_timeout_s <= 3600:
            raise ValueError(f"--request-timeout-s must be above 0 and at most 3600, got {self.request_timeout_s}")
        if self.shutdown_grace_s < self.request_timeout_s:
            raise ValueError(
                f"--shutdown-grace-seconds {self.shutdown_grace_s:g} is shorter than --request-timeout-s "
                f"{self.request_timeout_s:g}: a request in flight at shutdown could be cut off before its own timeout; "
                "raise the grace or lower the timeout"
            )
        if self.max_batch_size < 1:
            raise ValueError(f"--max-batch-size must be at least 1, got {self.max_batch_size}")
        if not 0 <= self.max_batch_delay_ms <= 1000:
            raise ValueError(f"--max-batch-delay-ms must be between 0 and 1000, got {self.max_batch_delay_ms}")


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
        "--search-params",
        default=os.environ.get(environment.SEARCH_PARAMS, ""),
        help="Default search effort, NAME=INTEGER (IVF_*: nprobe, default 32, at most nlist; HNSW: ef, default 64). "
        "Env: IMAGE_SEARCH_SEARCH_PARAMS.",
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
        help="Compile the network for the CPU with Inductor at load: 10 to 20 s more at start, after which the "
        "forward pass runs about 1.4x faster at fp32 and 1.8x at bf16. Needs a C++ compiler (g++); a network that "
        "cannot be compiled, or whose compiled embeddings fail the probe, runs uncompiled and the log says why. "
        "auto: the server compiles, `index` and `eval` from 5,000 images on; on: always; off: never. "
        "Env: IMAGE_SEARCH_COMPILE.",
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


def milvus_settings(args: argparse.Namespace) -> MilvusSettings:
    return MilvusSettings(
        uri=args.milvus_uri, collection=args.collection, token=environment.milvus_token(), index=vector_index(args)
    )


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        milvus=milvus_settings(args),
        model_dir=args.model_dir,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
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
