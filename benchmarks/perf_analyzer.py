"""`make bench-perf-analyzer`: Triton's perf_analyzer against the server, over gRPC and REST, at 1, 8 and 32 callers.

perf_analyzer (PyPI `perf-analyzer`) needs glibc 2.38, so it runs in the Debian 13 image hack/perf-analyzer-image.sh
builds, with podman on the host's network. The server is the real one (`image-search serve`) on the sample
catalogue in a milvus-lite file; every request is one real JPEG as the `image` input. perf_analyzer reads the model
configuration and statistics extensions, so its table carries the server's own queue and compute times.

python -m benchmarks perf-analyzer [--concurrency 1,8,32] [--protocols grpc,http] [--image localhost/perf-analyzer:2.60]
"""

import argparse
import base64
import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.predictor_server import run_cli, run_predictor

IMAGE = "localhost/perf-analyzer:2.60"
MODEL = "image-search"
QUERY_PHOTO = "chelsea"
CONTAINERS_CONF = Path(__file__).resolve().parents[1] / "hack" / "podman" / "containers.conf"


def input_data(photo: bytes) -> dict:
    """perf_analyzer's `--input-data`: `b64` is the tensor's raw bytes, so a BYTES element carries its 4-byte length;
    the shape is the whole tensor's (the model configuration has `max_batch_size` 0)."""
    element = struct.pack("<I", len(photo)) + photo
    return {"data": [{"image": {"b64": base64.b64encode(element).decode(), "shape": [1]}}]}


def perf_analyzer(image: str, protocol: str, port: int, concurrency: int, workdir: Path) -> dict[str, str]:
    """One perf_analyzer run; its CSV row (client latencies in µs, server stage times in µs)."""
    report = f"{protocol}-{concurrency}.csv"
    command = [
        "podman", "run", "--rm", "--network", "host", "--volume", f"{workdir}:/work",
        image, "perf_analyzer", "-m", MODEL, "-i", protocol, "-u", f"localhost:{port}",
        "--input-data", "/work/input.json", "--concurrency-range", str(concurrency),
        # Count windows of at least 4 requests per caller: on a small CPU a request takes tens of milliseconds and
        # more under load, and time windows would hold too few of them to be stable. On a shared machine three
        # windows within 25% of each other may never come; 50% still gives perf_analyzer's averages.
        "--measurement-mode", "count_windows", "--measurement-request-count", str(max(50, 4 * concurrency)),
        "--stability-percentage", "50", "--max-trials", "10", "-f", f"/work/{report}",
    ]  # fmt: skip
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    if result.returncode != 0 or not (workdir / report).exists():
        raise RuntimeError(f"perf_analyzer {protocol} c={concurrency} failed:\n{result.stdout[-3000:]}{result.stderr}")
    with (workdir / report).open() as rows:
        return next(csv.DictReader(rows))


def table(results: list[tuple[str, int, dict[str, str]]]) -> str:
    def ms(row: dict[str, str], column: str) -> str:
        return f"{float(row[column]) / 1000:.1f}"

    lines = [
        "| protocol | concurrency | infer/s | p50 ms | p99 ms | server queue ms | server compute ms (in+infer+out) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for protocol, concurrency, row in results:
        compute = [ms(row, f"Server Compute {part}") for part in ("Input", "Infer", "Output")]
        lines.append(
            f"| {'gRPC' if protocol == 'grpc' else 'REST'} | {concurrency} | {float(row['Inferences/Second']):.1f} | "
            f"{ms(row, 'p50 latency')} | {ms(row, 'p99 latency')} | {ms(row, 'Server Queue')} | "
            f"{' + '.join(compute)} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", default="1,8,32", help="Callers at once, comma-separated (default 1,8,32).")
    parser.add_argument("--protocols", default="grpc,http", help="perf_analyzer's -i values (default grpc,http).")
    parser.add_argument("--image", default=IMAGE, help=f"The perf_analyzer image (default {IMAGE}).")


def run(args: argparse.Namespace) -> int:
    if shutil.which("podman") is None:
        print("bench-perf-analyzer: podman is missing; run hack/image-tools.sh", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as directory:
        workdir = Path(directory)
        catalogue, milvus = workdir / "catalogue", str(workdir / "milvus.db")
        for step in (("sample-catalogue", "--out", str(catalogue)), ("index", str(catalogue), "--milvus-uri", milvus)):
            done = run_cli(*step, timeout=1800)
            if done.returncode != 0:
                print(f"bench-perf-analyzer: image-search {step[0]} failed:\n{done.stderr}", file=sys.stderr)
                return 1
        (workdir / "input.json").write_text(json.dumps(input_data((catalogue / f"{QUERY_PHOTO}.jpg").read_bytes())))
        results = []
        with run_predictor(milvus, workdir, timeout_s=600) as server:
            for protocol in args.protocols.split(","):
                port = server.grpc_port if protocol == "grpc" else server.http_port
                for concurrency in (int(value) for value in args.concurrency.split(",")):
                    results.append(
                        (protocol, concurrency, perf_analyzer(args.image, protocol, port, concurrency, workdir))
                    )
                    print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    return 0
