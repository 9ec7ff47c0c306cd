"""Text and image throughput of a CLIP package shaped like open_clip's ViT-B-32, with random weights (speed does not
depend on the weights' values, and no CLIP weights are downloaded).

For fp32 and for the precision `--precision auto` picks on this machine:
- in process: text queries/s (tokenize + text tower) and images/s (decode + preprocess + image tower), batches of 4;
- served: the same through a real `image-search serve` over gRPC at concurrency 32, one query per request.

    python -m benchmarks clip [--quick] [--out DIR]      (or the clip part: python -m benchmarks run --only clip)

Self-contained: it makes the package, indexes the sample catalogue with it and starts its own servers.
"""

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.loadgen import Send, closed_loop

QUERY_TEXTS = [
    "a photo of a cat",
    "a red bicycle leaning on a wall",
    "the moon at night",
    "a cup of coffee",
    "an astronaut in space",
    "a camera on a tripod",
    "a close-up of gravel",
    "two motorcycles parked side by side",
]
CONCURRENCY = 32
MODEL = "image-search"


@dataclass
class Figure:
    precision: str
    where: str  # "in process" or "served c=32"
    what: str  # "text" or "image"
    per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0  # queries that failed (timed out on a machine too busy for the window), with the first reason
    first_error: str = ""


def make_vit_b_32_package(directory: Path) -> Path:
    from harness.clip_models import random_checkpoint
    from predictor.embedding.clip_package import export_open_clip

    checkpoint = random_checkpoint("ViT-B-32", directory / "vit-b-32-random.pt")
    out = directory / "package"
    export_open_clip("ViT-B-32", checkpoint, out, name="vit-b-32-random", version="1")
    checkpoint.unlink()
    return out


def _repeat_for(seconds: float, step) -> tuple[int, float]:  # noqa: ANN001 - a callable returning the items it did
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or done == 0:
        done += step()
    return done, elapsed


def measure_in_process(package: Path, precision_name: str, images: list[bytes], min_seconds: float) -> list[Figure]:
    from predictor.embedding.backbone import Backbone
    from predictor.embedding.model_package import load_package
    from predictor.imaging.decoding import ImageLimits, load_pixels

    backbone = Backbone(load_package(package), "cpu", precision_name, compile_mode="off")
    backbone.load()
    backbone.warm_up()
    texts = iter(range(1 << 30))

    def text_batch() -> int:
        start = next(texts) * 4
        batch = [QUERY_TEXTS[(start + i) % len(QUERY_TEXTS)] for i in range(4)]
        backbone.embed_text(backbone.text.tokenize(batch))
        return 4

    pictures = iter(range(1 << 30))

    def image_batch() -> int:
        start = next(pictures) * 4
        batch = [images[(start + i) % len(images)] for i in range(4)]
        pixels = np.stack([load_pixels(data, ImageLimits(), backbone.spec.preprocessing) for data in batch])
        backbone.run(pixels)
        return 4

    served_at = f"{backbone.precision} (text {backbone.text.precision})"
    text_done, text_s = _repeat_for(min_seconds, text_batch)
    image_done, image_s = _repeat_for(min_seconds, image_batch)
    figures = [
        Figure(served_at, "in process", "text", text_done / text_s),
        Figure(served_at, "in process", "image", image_done / image_s),
    ]
    print(table(figures), flush=True)
    return figures


@contextlib.asynccontextmanager
async def _sender(address: str, name: str, values: list[bytes]) -> AsyncIterator[Send]:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(address)
    requests = []
    for value in values:
        tensor = grpcclient.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([value], dtype=np.object_))
        requests.append([tensor])
    outputs = [grpcclient.InferRequestedOutput(output) for output in ("ids", "scores", "uris")]

    async def send(variant: int) -> None:
        await client.infer(MODEL, requests[variant], outputs=outputs)

    try:
        yield send
    finally:
        await client.close()


async def _served(address: str, name: str, values: list[bytes], warmup_s: float, duration_s: float):  # noqa: ANN202
    async with _sender(address, name, values) as send:
        return await closed_loop(send, len(values), CONCURRENCY, warmup_s, duration_s)


def served_windows(in_process_per_s: float, quick: bool) -> tuple[float, float]:
    """Warm-up and measuring window for a closed loop of `CONCURRENCY` callers: a round of them takes
    CONCURRENCY / rate seconds, so fixed windows of a few seconds would end inside the first round on a CPU (no
    request both sent and answered in the window, no latency at all). One round warms up; the window holds four."""
    round_s = CONCURRENCY / max(in_process_per_s, 1e-3)
    if quick:
        return max(1.0, round_s), max(3.0, round_s)
    return max(2.0, round_s), max(8.0, 4 * round_s)


def measure_served(
    package: Path,
    precision_name: str,
    milvus_uri: str,
    collection: str,
    images: list[bytes],
    workdir: Path,
    quick: bool,
    in_process: dict[str, float],
) -> list[Figure]:
    """`in_process`: queries per second in process, by what is queried ("text", "image"), to size the windows."""
    from harness.predictor_server import run_predictor

    texts = [text.encode() for text in QUERY_TEXTS]
    figures = []
    with run_predictor(
        milvus_uri,
        workdir,
        "--model-dir",
        str(package),
        "--collection",
        collection,
        "--precision",
        precision_name,
        "--compile",
        "off",
        # 32 text queries of ViT-B-32 size at once keep two CPU cores busy for seconds; the default 30 s is a bound
        # for users, not for a closed loop on a shared machine.
        "--request-timeout-s",
        "300",
        "--shutdown-grace-seconds",
        "300",
        timeout_s=900,
    ) as server:
        for what, name, values in (("text", "text", texts), ("image", "image", images)):
            warmup_s, duration_s = served_windows(in_process[what], quick)
            result = asyncio.run(_served(server.grpc_address, name, values, warmup_s, duration_s))
            latencies = np.array(result.latencies_ms or [np.nan])
            figures.append(
                Figure(
                    precision_name,
                    f"served c={CONCURRENCY}",
                    what,
                    result.requests_per_s,
                    float(np.percentile(latencies, 50)),
                    float(np.percentile(latencies, 99)),
                    result.errors,
                    result.first_error,
                )
            )
            print(table(figures[-1:]), flush=True)
    return figures


def table(figures: list[Figure]) -> str:
    lines = [f"  {'precision':<24} {'where':<14} {'query':<6} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}  errors"]
    for f in figures:
        p50 = "" if f.p50_ms is None else f"{f.p50_ms:8.1f}"
        p99 = "" if f.p99_ms is None else f"{f.p99_ms:8.1f}"
        errors = f"  {f.errors} ({f.first_error[:60]})" if f.errors else ""
        lines.append(f"  {f.precision:<24} {f.where:<14} {f.what:<6} {f.per_s:8.1f} {p50:>8} {p99:>8}{errors}")
    return "\n".join(lines)


def measure(workdir: Path, quick: bool = False) -> list[Figure]:
    """Every figure, for fp32 and for what `auto` picks (once when that is fp32)."""
    import torch

    from harness.predictor_server import run_cli
    from predictor.embedding.precision import choose_precision
    from predictor.imaging.sample_catalogue import write_catalogue

    package = make_vit_b_32_package(workdir)
    catalogue = workdir / "catalogue"
    paths = write_catalogue(catalogue)
    images = [path.read_bytes() for path in paths]
    auto = choose_precision("auto", torch.device("cpu"), ("fp32", "bf16", "fp16"))
    precisions = ["fp32"] if auto == "fp32" else ["fp32", "auto"]
    milvus_uri, collection = str(workdir / "milvus.db"), "clip_bench"
    indexed = run_cli(
        "index", str(catalogue), "--milvus-uri", milvus_uri, "--collection", collection, "--model-dir", str(package)
    )
    if indexed.returncode != 0:
        raise RuntimeError(f"indexing with the CLIP package failed:\n{indexed.stderr[-4000:]}")
    figures = []
    for name in precisions:
        in_process = measure_in_process(package, name, images, 2.0 if quick else 6.0)
        rates = {figure.what: figure.per_s for figure in in_process}
        figures += in_process
        figures += measure_served(package, name, milvus_uri, collection, images, workdir, quick, rates)
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="Short windows: a smoke run.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="Where the JSON goes.")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="image-search-clip-bench-") as scratch:
        figures = measure(Path(scratch), args.quick)
    print(table(figures))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    record = {
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "load_average_at_end": os.getloadavg()[0],
        "figures": [asdict(figure) for figure in figures],
    }
    (args.out / f"clip-{stamp}.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0
