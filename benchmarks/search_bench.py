"""Search alone: how long a Milvus lookup takes per query as the collection grows, next to exact search in memory.

The collection is built and searched through `ImageIndex`, the class the server uses, with random unit vectors of
the model's dimension. Exact numpy and FAISS flat search over the same vectors are the reference; Milvus's top-k
agreement with them (recall@k) is reported too, since a fast wrong answer is no answer.

Inserting and searching each run in a process of their own: a serving process opens a collection someone else
built, and milvus-lite answers the process that wrote the rows far more slowly than a fresh one.
"""

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.stats import Row
from predictor.identity import ModelIdentity
from predictor.index.collection import ImageIndex, IndexRow
from predictor.index.milvus import MilvusAccess
from predictor.index.search_options import DEFAULT_CONSISTENCY, DEFAULT_NAMESPACE, SearchOptions

SIZES = (10_000, 100_000)
TOP_K = 10
INSERT_CHUNK = 5_000
BATCH_QUERIES = 32
QUERIES = 200
RECALL_QUERIES = 50
COLLECTION = "search_bench"
OPTIONS = SearchOptions(top_k=TOP_K)


def random_unit_vectors(count: int, dimension: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def vectors_and_queries(count: int, dimension: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same collection and queries in every process that asks with the same arguments."""
    rng = np.random.default_rng(seed)
    return random_unit_vectors(count, dimension, rng), random_unit_vectors(QUERIES, dimension, rng)


def timed_calls(call: Callable[[int], object], min_calls: int = 20, max_calls: int = 200, min_s: float = 3.0):
    """Milliseconds per call of `call(i)`, repeating until both `min_calls` and `min_s` are reached."""
    latencies: list[float] = []
    started = time.perf_counter()
    while len(latencies) < max_calls and (len(latencies) < min_calls or time.perf_counter() - started < min_s):
        before = time.perf_counter()
        call(len(latencies))
        latencies.append((time.perf_counter() - before) * 1000)
    return latencies


def exact_top_k(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = vectors @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def _identity(dimension: int) -> ModelIdentity:
    return ModelIdentity("random-unit-vectors", "1", dimension)


def insert(uri: str, dimension: int, total: int, start: int, end: int, seed: int) -> None:
    """Add rows [start, end) of the seeded collection and wait until Milvus has indexed all of them."""
    vectors, _ = vectors_and_queries(total, dimension, seed)
    writer = ImageIndex.for_model(MilvusAccess(uri), COLLECTION, _identity(dimension))
    writer.ensure_collection()
    for first in range(start, end, INSERT_CHUNK):
        last = min(first + INSERT_CHUNK, end)
        writer.upsert(DEFAULT_NAMESPACE, [IndexRow(str(i), vectors[i], f"random/{i}", {}) for i in range(first, last)])
    writer.access.call("flush", "flush", writer.collection)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        description = writer.access.describe_index(writer.collection)
        if description.get("indexed_rows", 0) >= end and not description.get("pending_index_rows", 0):
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"Milvus had not indexed {end} rows after 600 s")
    writer.close()


def milvus_latencies(uri: str, dimension: int, total: int, size: int, seed: int) -> dict:
    """Per-query latency one query per call and many per call, and recall against exact search."""
    vectors, queries = vectors_and_queries(total, dimension, seed)
    # At the server's consistency; the writer flushed and waited for the index, so every row is visible.
    reader = ImageIndex.open_for_search(
        MilvusAccess(uri), COLLECTION, _identity(dimension), read_consistency=DEFAULT_CONSISTENCY
    )
    reader.search(queries[:1], OPTIONS)
    checked = queries[:RECALL_QUERIES]
    found = [reader.search(query[np.newaxis], OPTIONS)[0][:TOP_K] for query in checked]
    truth = [set(exact_top_k(vectors[:size], query, TOP_K).tolist()) for query in checked]
    recall = float(
        np.mean([len({int(h.id) for h in hits} & best) / TOP_K for hits, best in zip(found, truth, strict=True)])
    )
    batch = queries[:BATCH_QUERIES]
    single = timed_calls(lambda i: reader.search(queries[i % len(queries)][np.newaxis], OPTIONS))
    batched = timed_calls(lambda i: reader.search(batch, OPTIONS), min_calls=5, min_s=2.0)
    reader.close()
    return {"single": single, "batched": batched, "recall": recall}


def _row(name: str, latencies: list[float], notes: str = "", per_call: int = 1) -> Row:
    per_query = [latency / per_call for latency in latencies]
    row = Row("search", name, 1000.0 / float(np.mean(per_query)), per_query, unit="queries", notes=notes)
    row.images_per_request = per_call
    print(f"  {name:<42} p50 {row.p50:8.2f} ms/query" + (f"  ({notes})" if notes else ""), flush=True)
    return row


def _in_memory_rows(vectors: np.ndarray, queries: np.ndarray, label: str) -> list[Row]:
    import faiss  # here, not at the top: its OpenMP runtime has no business in the processes that run torch

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return [
        _row(f"numpy exact, {label}", timed_calls(lambda i: exact_top_k(vectors, queries[i % len(queries)], TOP_K))),
        _row(f"FAISS flat, {label}", timed_calls(lambda i: flat.search(queries[i % len(queries)][np.newaxis], TOP_K))),
    ]


def _in_own_process(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.search_bench", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.search_bench {args[0]} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def measure_search(workdir: Path, dimension: int, sizes: tuple[int, ...] = SIZES, seed: int = 0) -> list[Row]:
    """The collection grows through `sizes`; at each size Milvus and the exact references answer the same queries."""
    uri, total = str(workdir / "search.db"), max(sizes)
    common = ["--uri", uri, "--dimension", str(dimension), "--total", str(total), "--seed", str(seed)]
    vectors, queries = vectors_and_queries(total, dimension, seed)
    rows: list[Row] = []
    inserted = 0
    for size in sizes:
        started = time.perf_counter()
        _in_own_process("insert", *common, "--start", str(inserted), "--end", str(size))
        inserted = size
        print(f"  {size} vectors in Milvus after {time.perf_counter() - started:.0f} s of inserting", flush=True)
        # milvus-lite may log to stdout too; the answer is the last line.
        measured = json.loads(_in_own_process("measure", *common, "--size", str(size)).strip().splitlines()[-1])
        label = f"{size // 1000}k"
        rows.append(
            _row(f"Milvus (milvus-lite), {label}", measured["single"], f"recall@{TOP_K} {measured['recall']:.2f}")
        )
        rows.append(
            _row(f"Milvus (milvus-lite), {label}, {BATCH_QUERIES}/call", measured["batched"], per_call=BATCH_QUERIES)
        )
        rows += _in_memory_rows(vectors[:size], queries, label)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="One step of the search benchmark, in a process of its own.")
    parser.add_argument("step", choices=["insert", "measure"], help="Add rows, or time searches (JSON on stdout).")
    parser.add_argument("--uri", required=True, help="milvus-lite file.")
    parser.add_argument("--dimension", type=int, required=True, help="Vector dimension.")
    parser.add_argument("--total", type=int, required=True, help="Size of the whole seeded collection.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the vectors and queries.")
    parser.add_argument("--start", type=int, default=0, help="insert: first row.")
    parser.add_argument("--end", type=int, default=0, help="insert: row after the last.")
    parser.add_argument("--size", type=int, default=0, help="measure: rows in the collection now.")
    args = parser.parse_args()
    if args.step == "insert":
        insert(args.uri, args.dimension, args.total, args.start, args.end, args.seed)
    else:
        print(json.dumps(milvus_latencies(args.uri, args.dimension, args.total, args.size, args.seed)))


if __name__ == "__main__":
    main()
