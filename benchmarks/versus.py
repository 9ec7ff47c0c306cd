"""Before and after: another commit's server against this tree's, at the same load, in alternating rounds of one run.

python -m benchmarks versus --ref main                      # gRPC at concurrency 1 and 32, three rounds each
python -m benchmarks versus --ref main --milvus-server      # both on a real Milvus server instead of milvus-lite

Both servers run at once, each on its own index of the same catalogue built by its own code, and are loaded in turn
(before, after, before, after, ...), so drift in what else the machine is doing falls on both sides alike. Each is
loaded only once it serves its compiled network, as a pod does at full speed. The summary gives the medians of
images/s, p50 and the server's busy cores. Figures from a shared machine are noisy; the ratio of medians within one
run is what to read.
"""

import argparse
import contextlib
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.clients import grpc_sender
from benchmarks.cold_start import wait_for_compiled
from benchmarks.e2e import Timing, measure_row
from benchmarks.stats import Row
from benchmarks.workload import build_workload
from harness.predictor_server import REPO_ROOT, RunningServer, run_cli, run_predictor


def export_tree(ref: str, into: Path) -> Path:
    """The `predictor` package as it is at `ref`, in a directory of its own."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "predictor"], cwd=REPO_ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


@contextlib.contextmanager
def milvus_uris(workdir: Path, server: bool) -> Iterator[tuple[str, str]]:
    if not server:
        yield str(workdir / "before.db"), str(workdir / "after.db")
        return
    from harness.milvus_server import run_milvus_server

    with run_milvus_server(workdir / "milvus") as uri:
        yield uri, uri


@contextlib.contextmanager
def two_servers(ref: str, workdir: Path, catalogue: Path, server: bool) -> Iterator[dict[str, RunningServer]]:
    before_tree = export_tree(ref, workdir / "before-tree")
    with milvus_uris(workdir, server) as (before_uri, after_uri), contextlib.ExitStack() as stack:
        running = {}
        for side, tree, uri in (("before", before_tree, before_uri), ("after", REPO_ROOT, after_uri)):
            collection = f"bench_{side}"
            indexed = run_cli("index", str(catalogue), "--milvus-uri", uri, "--collection", collection, cwd=tree)
            if indexed.returncode != 0:
                raise RuntimeError(f"indexing with the {side} code failed:\n{indexed.stderr[-3000:]}")
            running[side] = stack.enter_context(
                run_predictor(uri, workdir, "--collection", collection, cwd=tree, timeout_s=300)
            )
        yield running


def measure(
    ref: str, concurrencies: tuple[int, ...], rounds: int, timing: Timing, milvus_server: bool = False
) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="image-search-versus-") as scratch:
        workdir = Path(scratch)
        workload = build_workload(workdir)
        with two_servers(ref, workdir, workload.catalogue_dir, milvus_server) as servers:
            # Both at full speed: each serves its compiled network once it has swapped it in.
            for server in servers.values():
                wait_for_compiled(server)
            for concurrency in concurrencies:
                for number in range(1, rounds + 1):
                    for side, server in servers.items():
                        label = ref if side == "before" else "this tree"
                        name = f"{side} ({label}) gRPC c={concurrency} #{number}"
                        factory = lambda server=server: grpc_sender(server.grpc_address, workload.images)  # noqa: E731
                        row = measure_row(
                            f"versus-{side}",
                            name,
                            factory,
                            len(workload.images),
                            concurrency,
                            1,
                            timing,
                            server.http_url,
                            server.process.pid,
                        )
                        rows.append(row)
    return rows


def summary(rows: list[Row]) -> list[str]:
    lines = []
    for concurrency in sorted({row.concurrency for row in rows}):
        medians = {}
        for side in ("before", "after"):
            picked = [row for row in rows if row.group == f"versus-{side}" and row.concurrency == concurrency]
            p50s = [row.p50 for row in picked if row.p50 is not None]
            cores = [row.server_cores for row in picked if row.server_cores is not None]
            medians[side] = (
                statistics.median(row.per_s for row in picked),
                statistics.median(p50s) if p50s else None,
                statistics.median(cores) if cores else None,
            )
        (before, before_p50, before_cores), (after, after_p50, after_cores) = medians["before"], medians["after"]
        lines.append(
            f"c={concurrency}: {before:.1f} -> {after:.1f} images/s (x{after / before:.2f}); "
            f"p50 {before_p50 or 0:.0f} -> {after_p50 or 0:.0f} ms; "
            f"server cores busy {_cores(before_cores)} -> {_cores(after_cores)}"
        )
    return lines


def _cores(busy: float | None) -> str:
    return "unknown" if busy is None else f"{busy:.2f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ref", default="main", help="The commit (branch, tag) to compare against.")
    parser.add_argument("--concurrency", type=int, action="append", help="Concurrent requests (repeatable).")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds per concurrency.")
    parser.add_argument("--duration", type=float, default=6.0, help="Seconds measured per round, after warm-up.")
    parser.add_argument("--milvus-server", action="store_true", help="Search a real Milvus server, not milvus-lite.")


def run(args: argparse.Namespace) -> int:
    timing = Timing(warmup_s=1.5, duration_s=args.duration)
    rows = measure(args.ref, tuple(args.concurrency or (1, 32)), args.rounds, timing, args.milvus_server)
    print("\n" + "\n".join(summary(rows)))
    return 0
