"""Filtered search: recall@10 against exact filtered search, and latency, by catalogue size x filter selectivity.

Everything goes through `ImageIndex`, the class the server searches with, on both Milvus kinds (a milvus-lite file and
the Milvus server from the PyPI package `milvus`), with each collection built at the default index and namespaced as
the server makes it. Every search runs in namespace `a`, which holds half of the rows; the filters keep:

- `namespace`: no filter, the namespace alone (50% of the rows);
- `uniform 10%`, `uniform 1%`, `uniform 0.1%`: a metadata field that has nothing to do with the pictures
  (`metadata["r"] < t`), the share of the whole collection the search may return;
- `category 5%`, `category 0.5%`: a category that *is* a visual cluster (as shop categories are), queried with a
  picture of another category -- the hardest case for an index that only scans the lists nearest the query.

The collection keeps `r`, `c10` and `c100` in filter columns as well (`--filter-columns`), and each filter is
measured both ways on the same rows: reading the metadata JSON (`fixed`, `planned`) and reading the columns
(`columns`, at the planned effort).

The vectors are synthetic: 10 groups of 10 clusters of 10 sub-clusters, each level a random direction, plus noise,
L2-normalised; so near neighbours exist at every scale, as they do among real embeddings. The exact answer is numpy
over the rows the filter keeps. `fixed` searches at the old fixed nprobe 32; `planned` at the effort the server plans
from the filter's row count (`predictor.search_effort`), which is what every request without `effort` gets.

Usage: python -m benchmarks.filtered_search --engines lite,server --sizes 100,2000,20000,200000
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.thread_cpu import stat_cpu_seconds

TOP_K = 10
# Queries per cell. On the server, a search there is slowed by 15 to 25 ms about once a second (docs/search-index.md),
# whatever it filters: with 200 queries p99 is the second slowest and moves by 5 ms between runs, with 500 it is the
# fifth. milvus-lite's JSON filters take hundreds of ms each, so it gets fewer.
QUERIES = {"lite": 40, "server": 500}
# Searches each reader makes before any is timed: its first ones set up the connection and count the collection,
# once per process.
WARM_UP = 3
DIMENSION = 1280
INSERT_CHUNK = 2_000
NAMESPACE = "a"
CASES = {
    "namespace": None,
    "uniform 10%": 'metadata["r"] < 200',
    "uniform 1%": 'metadata["r"] < 20',
    "uniform 0.1%": 'metadata["r"] < 2',
    "category 5%": "c10",
    "category 0.5%": "c100",
}
# `unfiltered` is the reference: the same query over the whole collection, no namespace or filter, at the index's
# default effort, so that what any search costs at that moment on this server stands beside each filtered cell.
# `columns-fixed` reads the columns at the old fixed nprobe 32, which loses hits (measured with `--strategies` only): it
# separates what evaluating the filter costs from what the planned effort's wider scan costs.
STRATEGIES = {"fixed": 32, "planned": None, "columns": None, "unfiltered": None, "columns-fixed": 32}
IN_THE_TABLE = ("fixed", "planned", "columns", "unfiltered")
SIZES = (100, 2_000, 20_000, 200_000)
# milvus-lite evaluates a metadata filter in Python row by row (hundreds of ms per search from 2,000 rows on), so the
# larger sizes would take hours there; it is the embedded default for small catalogues.
LITE_MAX_SIZE = 20_000
QUICK_SIZES = (100, 2_000)


def catalogue(size: int, dimension: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Vectors, their leaf cluster (0..999), namespaces and the uniform field r (0..999) of one seeded catalogue."""
    rng = np.random.default_rng(seed)
    levels = [rng.standard_normal((count, dimension)).astype(np.float32) for count in (10, 100, 1000)]
    leaf = rng.integers(0, 1000, size)
    vectors = _points(levels, leaf, rng)
    namespaces = np.where(rng.random(size) < 0.5, NAMESPACE, "b").tolist()
    return vectors, leaf, namespaces, rng.integers(0, 1000, size)


def _points(levels: list[np.ndarray], leaf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    coarse, middle, fine = levels
    points = (
        1.0 * coarse[leaf // 100]
        + 0.8 * middle[leaf // 10]
        + 0.6 * fine[leaf]
        + 0.7 * rng.standard_normal((len(leaf), coarse.shape[1])).astype(np.float32)
    )
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def queries(dimension: int, count: int = QUERIES["lite"], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fresh pictures from the same clusters as the catalogue's, and their leaf clusters."""
    rng = np.random.default_rng(seed)
    levels = [rng.standard_normal((n, dimension)).astype(np.float32) for n in (10, 100, 1000)]
    query_rng = np.random.default_rng(seed + 1)
    leaf = query_rng.integers(0, 1000, count)
    return _points(levels, leaf, query_rng), leaf


def case_filter(case: str, query_leaf: int) -> str | None:
    """The filter of `case` for a query of cluster `query_leaf`: a category the query does not belong to."""
    expression = CASES[case]
    if expression in ("c10", "c100"):
        width = 100 if expression == "c10" else 10
        other = (query_leaf // width + 1) % (1000 // width)
        return f'metadata["{expression}"] == {other}'
    return expression


def _matches(case: str, query_leaf: int, leaf: np.ndarray, r: np.ndarray, in_namespace: np.ndarray) -> np.ndarray:
    expression = CASES[case]
    if expression is None:
        keep = np.ones(len(leaf), bool)
    elif expression in ("c10", "c100"):
        width = 100 if expression == "c10" else 10
        keep = leaf // width == (query_leaf // width + 1) % (1000 // width)
    else:
        keep = r < int(expression.rsplit("<", 1)[1])
    return keep & in_namespace


def _identity(dimension: int):
    from predictor.identity import ModelIdentity

    return ModelIdentity("synthetic-clusters", "1", dimension)


def _collection(size: int) -> str:
    return f"filtered_{size}"


def _filter_columns():
    from predictor.index.filter_columns import parse_filter_columns

    return parse_filter_columns("r:int,c10:int,c100:int")


def build(uri: str, size: int, dimension: int) -> None:
    """Fill one collection at the default index and wait until Milvus has indexed every row."""
    from predictor.index.collection import ImageIndex, IndexRow
    from predictor.index.milvus import MilvusAccess

    vectors, leaf, namespaces, r = catalogue(size, dimension)
    writer = ImageIndex.for_model(
        MilvusAccess(uri), _collection(size), _identity(dimension), filter_columns=_filter_columns()
    )
    writer.ensure_collection()
    for first in range(0, size, INSERT_CHUNK):
        for namespace in (NAMESPACE, "b"):
            rows = [
                IndexRow(
                    str(i),
                    vectors[i],
                    f"synthetic/{i}",
                    {"r": int(r[i]), "c10": int(leaf[i] // 100), "c100": int(leaf[i] // 10)},
                )
                for i in range(first, min(first + INSERT_CHUNK, size))
                if namespaces[i] == namespace
            ]
            if rows:
                writer.upsert(namespace, rows)
    sealed_and_indexed(writer, size)
    writer.close()


def sealed_and_indexed(index, rows: int) -> None:
    """Flush, wait until Milvus has indexed all `rows`, and load the collection again: the state a collection is in
    some time after its indexing job ended."""
    index.access.call("flush", "flush", index.collection)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        description = index.access.describe_index(index.collection)
        if description.get("indexed_rows", 0) >= rows and not description.get("pending_index_rows", 0):
            break
        time.sleep(0.5)
    from predictor.index.settings import is_local_file

    if is_local_file(index.access.uri):
        # milvus-lite searches what it has indexed once the measuring process opens the file, and loading it again
        # here can read an index file its own thread is still writing ("read error in ....idx").
        return
    # Loaded again, the query node searches the built index (a Milvus 2.3 server searches rows it has not loaded
    # indexed yet with its interim index, at its own nprobe).
    index.access.call("release", "release_collection", index.collection)
    index.load()


def measure(
    uri: str, size: int, dimension: int, count: int, strategies: list[str] | None = None, server_pid: int | None = None
) -> dict:
    """Recall@10 and per-query latency of every case x strategy (those of the table unless named) on one collection,
    `count` queries each (JSON-ready). With the pid of a Milvus on this machine, also the CPU time it spent per
    search: /proc counts it in clock ticks, so a single search reads 0 or a tick, and the mean over a cell is right."""
    from predictor.index.collection import ImageIndex
    from predictor.index.milvus import MilvusAccess
    from predictor.index.search_options import DEFAULT_CONSISTENCY, SearchOptions

    vectors, leaf, namespaces, r = catalogue(size, dimension)
    in_namespace = np.array(namespaces) == NAMESPACE
    asked, asked_leaf = queries(dimension, count)

    def reader(through_columns: bool) -> ImageIndex:
        opened = ImageIndex.open_for_search(
            MilvusAccess(uri), _collection(size), _identity(dimension), read_consistency=DEFAULT_CONSISTENCY
        )
        if not through_columns:
            # The same rows, filtered as a collection without filter columns filters them: through the JSON.
            opened._layout = replace(opened.layout, filter_columns=())
        return opened

    chosen = {strategy: STRATEGIES[strategy] for strategy in strategies or IN_THE_TABLE}
    readers = {strategy: reader(strategy.startswith("columns")) for strategy in chosen}
    for opened in readers.values():
        for query in asked[:WARM_UP]:
            opened.search(query[np.newaxis], SearchOptions(top_k=TOP_K, namespace=NAMESPACE))
    server_cpu = _cpu_reader(server_pid)
    results = {}
    for case in CASES:
        recalls: dict[str, list[float]] = {strategy: [] for strategy in chosen}
        latencies: dict[str, list[float]] = {strategy: [] for strategy in chosen}
        cpu_s = dict.fromkeys(chosen, 0.0)
        # The exact answers first: numpy's threads, still spinning after a product, would slow the next search.
        exact = [
            _exact(case, query, int(query_leaf), vectors, leaf, r, in_namespace)
            for query, query_leaf in zip(asked, asked_leaf, strict=True)
        ]
        for query, query_leaf, (best, matching) in zip(asked, asked_leaf, exact, strict=True):
            # The strategies take turns query by query, so that the machine's slow moments fall on all of them.
            for strategy, effort in chosen.items():
                options = SearchOptions(
                    top_k=TOP_K, filter=case_filter(case, int(query_leaf)), namespace=NAMESPACE, effort=effort
                )
                cpu_before = server_cpu()
                started = time.perf_counter()
                if strategy == "unfiltered":
                    _unfiltered_search(readers[strategy], query)
                    latencies[strategy].append((time.perf_counter() - started) * 1000)
                    cpu_s[strategy] += server_cpu() - cpu_before
                    continue
                hits = readers[strategy].search(query[np.newaxis], options)[0][:TOP_K]
                latencies[strategy].append((time.perf_counter() - started) * 1000)
                cpu_s[strategy] += server_cpu() - cpu_before
                if matching:
                    recalls[strategy].append(len({int(hit.id) for hit in hits} & best) / min(TOP_K, matching))
        for strategy in chosen:
            results[f"{case}|{strategy}"] = {
                "recall": float(np.mean(recalls[strategy])) if recalls[strategy] else None,
                "p50_ms": float(np.percentile(latencies[strategy], 50)),
                "p99_ms": float(np.percentile(latencies[strategy], 99)),
                "server_cpu_ms": cpu_s[strategy] / len(latencies[strategy]) * 1000 if server_pid else None,
                "matching": int(_matches(case, int(asked_leaf[0]), leaf, r, in_namespace).sum()),
            }
    for opened in readers.values():
        opened.close()
    return results


def _cpu_reader(pid: int | None):  # noqa: ANN202 - a reader of seconds
    """CPU seconds so far of process `pid`, its threads included; always 0 without a pid."""
    if pid is None:
        return lambda: 0.0
    stat = Path(f"/proc/{pid}/stat")
    return lambda: stat_cpu_seconds(stat.read_text())


def _unfiltered_search(index, query: np.ndarray) -> None:
    index.access.call(
        "search",
        "search",
        index.collection,
        data=[query.tolist()],
        limit=TOP_K,
        anns_field="vector",
        search_params=index.vector_index.search_request(TOP_K),
        output_fields=index.layout.output_fields,
        consistency_level=index.read_consistency,
    )


def _exact(
    case: str, query: np.ndarray, query_leaf: int, vectors: np.ndarray, leaf: np.ndarray, r: np.ndarray, in_namespace
) -> tuple[set[int], int]:
    """The exact top TOP_K rows of `case` for one query, and how many rows the case keeps."""
    keep = np.flatnonzero(_matches(case, query_leaf, leaf, r, in_namespace))
    scores = vectors[keep] @ query
    return set(keep[np.argsort(-scores)[:TOP_K]].tolist()), len(keep)


def _step(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.filtered_search", *args],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.filtered_search {args[0]} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def run_engine(
    uri: str, sizes: list[int], dimension: int, count: int, log=print, server_pid: int | None = None
) -> dict[int, dict]:
    """Build and measure each size on the Milvus at `uri` with `count` queries a cell, every step in a process of
    its own (as a server opens a collection that an indexing job built)."""
    measured = {}
    reads_cpu = ["--server-pid", str(server_pid)] if server_pid else []
    for size in sizes:
        started = time.perf_counter()
        _step("build", "--uri", uri, "--size", str(size), "--dimension", str(dimension))
        log(f"  {size} rows built in {time.perf_counter() - started:.0f} s")
        output = _step(
            "measure",
            *("--uri", uri, "--size", str(size), "--dimension", str(dimension), "--queries", str(count)),
            *reads_cpu,
        )
        measured[size] = json.loads(output.strip().splitlines()[-1])
    return measured


def table(results: dict[str, dict[int, dict]]) -> str:
    """Markdown: one row per engine x size x case, recall@10 and latency of each strategy."""
    lines = [
        "| Milvus | rows | filter (share) | recall@10 at nprobe 32 | recall@10 planned | p50 / p99 ms planned, JSON "
        "| recall@10 planned, columns | p50 / p99 ms planned, columns | p50 / p99 ms unfiltered "
        "| server CPU ms per search: columns / unfiltered |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, sizes in results.items():
        for size, cases in sizes.items():
            for case in CASES:
                fixed, planned, columns, unfiltered = (cases[f"{case}|{strategy}"] for strategy in IN_THE_TABLE)
                if planned["recall"] is None:
                    continue
                lines.append(
                    f"| {engine} | {size:,} | {case} | {fixed['recall']:.3f} | {planned['recall']:.3f} | "
                    f"{planned['p50_ms']:.1f} / {planned['p99_ms']:.1f} | {columns['recall']:.3f} | "
                    f"{columns['p50_ms']:.1f} / {columns['p99_ms']:.1f} | "
                    f"{unfiltered['p50_ms']:.1f} / {unfiltered['p99_ms']:.1f} | {_cpu_cell(columns, unfiltered)} |"
                )
    return "\n".join(lines)


def _cpu_cell(*cells: dict) -> str:
    spent = [cell.get("server_cpu_ms") for cell in cells]
    return "" if None in spent else " / ".join(f"{ms:.1f}" for ms in spent)


def measure_filtered(workdir: Path, engines: list[str], sizes: list[int], dimension: int = DIMENSION, log=print):
    """The whole part: {engine: {size: {case|strategy: figures}}} and its table."""
    from harness.milvus_server import milvus_server_pids, run_milvus_server

    results: dict[str, dict[int, dict]] = {}
    if "lite" in engines:
        log("filtered search, milvus-lite")
        lite_sizes = [size for size in sizes if size <= LITE_MAX_SIZE]
        results["milvus-lite"] = run_engine(str(workdir / "filtered.db"), lite_sizes, dimension, QUERIES["lite"], log)
    if "server" in engines:
        log("filtered search, Milvus server")
        with run_milvus_server(workdir / "filtered-server", timeout=300) as uri:
            binary = next(pid for pid in milvus_server_pids(uri) if Path(f"/proc/{pid}/comm").read_text() == "milvus\n")
            results["Milvus 2.3.5 server"] = run_engine(uri, sizes, dimension, QUERIES["server"], log, binary)
    return results, table(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", choices=["all", "build", "measure"], default="all")
    parser.add_argument("--uri", help="build/measure: the Milvus.")
    parser.add_argument("--size", type=int, default=0, help="build/measure: rows in the collection.")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="all: catalogue sizes.")
    parser.add_argument("--engines", default="lite,server", help="all: lite, server or both.")
    parser.add_argument("--dimension", type=int, default=DIMENSION, help="Vector dimension (the model's: 1280).")
    parser.add_argument("--queries", type=int, default=QUERIES["server"], help="measure: queries per cell.")
    parser.add_argument(
        "--strategies",
        default=",".join(IN_THE_TABLE),
        help=f"measure: the ways to search, taking turns, of {', '.join(STRATEGIES)}.",
    )
    parser.add_argument(
        "--server-pid", type=int, help="measure: pid of the Milvus process, on this machine, to read its CPU time."
    )
    parser.add_argument("--json", help="all: also write the figures here.")
    args = parser.parse_args()
    if args.step == "build":
        build(args.uri, args.size, args.dimension)
    elif args.step == "measure":
        strategies = [strategy.strip() for strategy in args.strategies.split(",")]
        if unknown := set(strategies) - set(STRATEGIES):
            parser.error(f"--strategies: unknown {', '.join(sorted(unknown))}; known: {', '.join(STRATEGIES)}")
        measured = measure(args.uri, args.size, args.dimension, args.queries, strategies, args.server_pid)
        print(json.dumps(measured))
    else:
        sizes = [int(size) for size in args.sizes.split(",")]
        engines = [engine.strip() for engine in args.engines.split(",")]
        with tempfile.TemporaryDirectory(prefix="filtered-search-") as scratch:
            results, text = measure_filtered(Path(scratch), engines, sizes, args.dimension)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        print(text)


if __name__ == "__main__":
    main()
