"""Search at a realistic scale: recall@10 against exact search, latency per query and memory, on real embeddings.

The vectors are `benchmarks.vectorset`'s (real embeddings of real image variants, cached under data/). Both Milvus
kinds are measured: milvus-lite (in a process of its own, as a server process would open it) and the Milvus server
(`milvus-server` from the PyPI package `milvus`, started as the tests start it). One collection per kind is filled
once; each index type is then built on it in turn (release, drop the index, create, wait, load), and each search
setting answers every query one per call.

Exact search is numpy in float64 over the same unit vectors. Recall counts the returned ids among the exact top 10;
"tie-aware" recall also counts an id whose exact score equals the 10th one to within 1e-6, so that equal vectors
(which a real catalogue has: mirrored symmetric images, identical crops) are not counted as misses.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.stats import Row

TOP_K = 10
TIE_TOLERANCE = 1e-6
INSERT_CHUNK = 2_000
SIZE = 200_000
QUICK_SIZE = 20_000
MEMORY_SIZE = 50_000
MEMORY_DIMENSIONS = (1280, 512, 2048, 256)
COLLECTION = "scale_bench"

# (index type, build parameters, search settings); the defaults of predictor.index.vector_index are among them.
LITE_INDEXES = (
    ("FLAT", {}, ({},)),
    ("IVF_FLAT", {"nlist": 1024}, ({"nprobe": 8}, {"nprobe": 32}, {"nprobe": 128})),
    ("IVF_SQ8", {"nlist": 1024}, ({"nprobe": 8}, {"nprobe": 32}, {"nprobe": 128})),
    ("HNSW", {"M": 16, "efConstruction": 200}, ({"ef": 16}, {"ef": 64}, {"ef": 256})),
    ("AUTOINDEX", {}, ({},)),
    # Accepted at creation by milvus-lite, which then cannot build it: searches fall back to brute force.
    ("IVF_PQ", {"nlist": 1024, "m": 64, "nbits": 8}, ({"nprobe": 32},)),
)
SERVER_INDEXES = (
    *LITE_INDEXES[:5],
    ("IVF_PQ", {"nlist": 1024, "m": 64, "nbits": 8}, ({"nprobe": 32}, {"nprobe": 128})),
    ("SCANN", {"nlist": 1024}, ({"nprobe": 32, "reorder_k": 100},)),
)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Ids and float64 scores of the exact top k, and the (k+1)-th score."""
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    top = np.argsort(-scores, axis=1)[:, : k + 1]
    return top[:, :k], np.take_along_axis(scores, top, axis=1)


def recalls(found: list[list[int]], truth: np.ndarray, truth_scores: np.ndarray, vectors, queries) -> dict:
    plain, tie_aware = [], []
    for row, ids in enumerate(found):
        plain.append(len(set(ids) & set(truth[row].tolist())) / TOP_K)
        if ids:
            scores = vectors[np.array(ids)].astype(np.float64) @ queries[row].astype(np.float64)
            tie_aware.append(min(TOP_K, int((scores >= truth_scores[row, TOP_K - 1] - TIE_TOLERANCE).sum())) / TOP_K)
        else:
            tie_aware.append(0.0)
    return {"recall": float(np.mean(plain)), "tie_aware_recall": float(np.mean(tie_aware))}


def ties(vectors: np.ndarray, truth_scores: np.ndarray) -> dict:
    """How often the 10th and 11th exact scores are equal, and how many vectors are exact duplicates."""
    gap = truth_scores[:, TOP_K - 1] - truth_scores[:, TOP_K]
    duplicates = len(vectors) - len(np.unique(vectors.round(6), axis=0))
    return {"queries_with_tie_at_10": int((gap <= TIE_TOLERANCE).sum()), "duplicate_vectors": int(duplicates)}


def _client(uri: str):
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri)


def fill(client, vectors: np.ndarray, collection: str = COLLECTION) -> float:
    from pymilvus import DataType, MilvusClient

    if client.has_collection(collection):
        client.drop_collection(collection)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    client.create_collection(collection, schema=schema, consistency_level="Strong")
    started = time.perf_counter()
    for first in range(0, len(vectors), INSERT_CHUNK):
        chunk = vectors[first : first + INSERT_CHUNK]
        client.insert(collection, [{"id": first + i, "vector": v.tolist()} for i, v in enumerate(chunk)])
    client.flush(collection)
    return time.perf_counter() - started


def build_index(client, index_type: str, params: dict, rows: int, collection: str = COLLECTION) -> float:
    from pymilvus import MilvusClient

    client.release_collection(collection)
    if client.list_indexes(collection):
        client.drop_index(collection, "vector")
    index_params = MilvusClient.prepare_index_params()
    index_params.add_index(field_name="vector", index_type=index_type, metric_type="COSINE", params=params)
    started = time.perf_counter()
    client.create_index(collection, index_params)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        description = client.describe_index(collection, "vector")
        if int(description.get("indexed_rows", rows)) >= rows and not int(description.get("pending_index_rows", 0)):
            break
        time.sleep(0.5)
    client.load_collection(collection)
    return time.perf_counter() - started


def measure_index(
    client, queries: np.ndarray, search: dict, consistency: str = "Bounded", collection: str = COLLECTION
) -> dict:
    """One query per call. Bounded consistency by default: at Strong, the Milvus server makes every search wait for
    the next time tick (200 ms by default), which is what the "Strong" rows show."""
    params = {"metric_type": "COSINE", "params": search}
    options = {"limit": TOP_K, "search_params": params, "consistency_level": consistency}
    client.search(collection, data=[queries[0].tolist()], **options)
    found, latencies = [], []
    for query in queries:
        started = time.perf_counter()
        hits = client.search(collection, data=[query.tolist()], **options)[0]
        latencies.append((time.perf_counter() - started) * 1000)
        found.append([int(hit["id"]) for hit in hits])
    return {"found": found, "latencies_ms": latencies}


def run_engine(uri: str, vectors: np.ndarray, queries: np.ndarray, indexes, log=print) -> list[dict]:
    from predictor.index.vector_index import VectorIndex

    client = _client(uri)
    took = fill(client, vectors)
    log(f"    {len(vectors)} vectors inserted in {took:.0f} s")
    truth, truth_scores = exact_top(vectors, queries)
    results = []
    for index_type, build, searches in indexes:
        try:
            build_s = build_index(client, index_type, build, len(vectors))
            described = client.describe_index(COLLECTION, "vector")
        except Exception as error:  # noqa: BLE001 - an index type this Milvus refuses is a result too
            results.append({"index": index_type, "build": build, "error": str(error)[:300]})
            log(f"    {index_type}: refused ({str(error)[:120]})")
            continue
        default = VectorIndex()
        settings = [(search, "Bounded") for search in searches]
        if (index_type, build) == (default.index_type, default.params):
            settings.append((default.search_params, "Strong"))
        for search, consistency in settings:
            measured = measure_index(client, queries, search, consistency)
            found = measured.pop("found")
            entry = {
                "index": index_type,
                "build": build,
                "search": search,
                "consistency": consistency,
                "build_s": round(build_s, 1),
                "described_type": described.get("index_type"),
                **measured,
                **recalls(found, truth, truth_scores, vectors, queries),
            }
            results.append(entry)
            log(
                f"    {index_type:<9} {json.dumps(search):<22} {consistency:<7} recall {entry['recall']:.3f} "
                f"(ties {entry['tie_aware_recall']:.3f})  p50 {np.percentile(measured['latencies_ms'], 50):6.2f} ms  "
                f"p99 {np.percentile(measured['latencies_ms'], 99):6.2f} ms  build {build_s:.0f} s"
            )
    client.drop_collection(COLLECTION)
    client.close()
    return results


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def memory_per_million(workdir: Path, real: np.ndarray, count: int = MEMORY_SIZE, log=print) -> list[dict]:
    """Resident memory a fresh Milvus server gains per million vectors loaded with the default index, per dimension.

    A fresh server for each dimension: a server that has held and dropped a collection keeps that memory for reuse,
    and then gains less than the new collection needs. 1280-d are the real vectors, 256-d their PCA projection;
    512-d and 2048-d are random unit vectors, since memory depends on the count and the dimension, not on the values.
    """
    from harness.milvus_server import milvus_server_pids, run_milvus_server
    from predictor.index.vector_index import VectorIndex

    default_index = VectorIndex()
    rng = np.random.default_rng(0)
    results = []
    for dimension in MEMORY_DIMENSIONS:
        if dimension == real.shape[1]:
            vectors = real[:count]
        elif dimension < real.shape[1]:
            centred = real[:count] - real[:count].mean(axis=0)
            basis = np.linalg.svd(centred[:20_000], full_matrices=False)[2][:dimension]
            vectors = centred @ basis.T
        else:
            vectors = rng.standard_normal((count, dimension)).astype(np.float32)
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        with run_milvus_server(workdir / f"memory-{dimension}", timeout=300) as uri:
            client = _client(uri)
            time.sleep(5)
            before = rss_bytes(milvus_server_pids(uri))
            fill(client, vectors, COLLECTION)
            build_index(client, default_index.index_type, default_index.params, len(vectors), COLLECTION)
            time.sleep(5)
            after = rss_bytes(milvus_server_pids(uri))
            client.close()
        per_million = (after - before) / len(vectors) * 1e6
        results.append(
            {
                "dimension": dimension,
                "vectors": len(vectors),
                "index": default_index.describe(),
                "rss_gain_bytes": after - before,
                "gib_per_million": per_million / 2**30,
                "raw_float32_gib_per_million": dimension * 4 * 1e6 / 2**30,
            }
        )
        log(
            f"    {dimension:>5}-d: +{(after - before) / 2**20:.0f} MiB for {len(vectors)}: "
            f"{per_million / 2**30:.2f} GiB/M"
        )
    return results


def _lite_in_own_process(workdir: Path, cache: Path, index_types: tuple[str, ...] | None) -> list[dict]:
    command = [sys.executable, "-m", "benchmarks.scale", "lite", "--uri", str(workdir / "scale.db")]
    command += ["--set", str(cache), "--indexes", ",".join(index_types or ())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=7200, check=False)
    sys.stdout.write("".join(line + "\n" for line in result.stderr.splitlines() if line.startswith("    ")))
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.scale lite failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def to_rows(engine: str, results: list[dict], size: int) -> list[Row]:
    from predictor.index.vector_index import VectorIndex

    default = VectorIndex()
    rows = []
    for entry in results:
        if "error" in entry:
            continue
        search = ",".join(f"{k}={v}" for k, v in entry["search"].items())
        is_default = entry["index"] == default.index_type and entry["search"] == default.search_params
        is_default &= entry["build"] == default.params and entry["consistency"] == "Bounded"
        if entry["consistency"] != "Bounded":
            search += f" {entry['consistency']}"
        row = Row(
            "scale",
            f"{engine} {entry['index']} {search}".strip() + f", {size // 1000}k",
            1000.0 / float(np.mean(entry["latencies_ms"])),
            entry["latencies_ms"],
            unit="queries",
            notes=f"recall@10 {entry['recall']:.3f}, tie-aware {entry['tie_aware_recall']:.3f}; build "
            f"{entry['build_s']} s" + ("; default" if is_default else ""),
        )
        row.recall = entry["recall"]
        rows.append(row)
    return rows


def table(results: dict, size: int, memory: list[dict], diagnosis: dict) -> str:
    lines = [f"search at scale: {size} real embeddings, {diagnosis['queries']} queries, top {TOP_K}, one per call"]
    header = (
        f"{'engine':<8} {'index':<10} {'search':<22} {'consist.':<8} {'recall':>7} {'ties':>7} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'q/s':>7}"
    )
    lines += [header, "-" * len(header)]
    for engine, entries in results.items():
        for entry in entries:
            if "error" in entry:
                lines.append(f"{engine:<8} {entry['index']:<10} refused: {entry['error'][:80]}")
                continue
            latencies = entry["latencies_ms"]
            lines.append(
                f"{engine:<8} {entry['index']:<10} {json.dumps(entry['search']):<22} {entry['consistency']:<8} "
                f"{entry['recall']:>7.3f} "
                f"{entry['tie_aware_recall']:>7.3f} {np.percentile(latencies, 50):>8.2f} "
                f"{np.percentile(latencies, 99):>8.2f} {1000 / np.mean(latencies):>7.1f}"
            )
    lines.append(
        f"exact ties at the 10th place: {diagnosis['queries_with_tie_at_10']} queries; duplicate vectors: "
        f"{diagnosis['duplicate_vectors']}"
    )
    if memory:
        lines.append("Milvus server resident memory per million vectors (default index):")
        lines += [
            f"  {m['dimension']:>5}-d: {m['gib_per_million']:.2f} GiB "
            f"(raw float32 {m['raw_float32_gib_per_million']:.2f})"
            for m in memory
        ]
    return "\n".join(lines)


def served_geometry(vectors: np.ndarray) -> np.ndarray:
    """The vectors as the served default stores them: through its projection (centring, for instance) when it has one.

    The 200,000-vector figures in docs/benchmarks.md are in this geometry."""
    from predictor.embedding.model_package import default_spec

    spec = default_spec()
    if spec.projection is None or spec.projection.input_dim != vectors.shape[1]:
        return vectors
    return spec.projection.load().apply(vectors)


def _only(indexes, wanted: tuple[str, ...] | None):
    return tuple(entry for entry in indexes if not wanted or entry[0] in wanted)


def measure(
    quick: bool = False,
    size: int | None = None,
    engines: tuple[str, ...] = ("lite", "server"),
    index_types: tuple[str, ...] | None = None,
) -> tuple:
    from benchmarks import vectorset
    from harness.milvus_server import run_milvus_server

    size = size or (QUICK_SIZE if quick else SIZE)
    queries = 100 if quick else 300
    started = time.perf_counter()
    # A smaller size reuses the full set when it is cached: its first `size` vectors come from fewer sources.
    full = size <= SIZE and vectorset.cache_path(SIZE).exists()
    vector_set = vectorset.load_or_build(SIZE) if full else vectorset.load_or_build(size, queries=queries)
    vectors, queries = served_geometry(vector_set.vectors[:size]), served_geometry(vector_set.queries)
    vector_set.queries = queries
    print(f"  vector set ready after {time.perf_counter() - started:.0f} s: {vector_set.provenance}", flush=True)
    _, truth_scores = exact_top(vectors, vector_set.queries)
    diagnosis = {"queries": len(vector_set.queries), **ties(vectors, truth_scores)}
    results: dict[str, list[dict]] = {}
    memory: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="image-search-scale-") as scratch:
        workdir = Path(scratch)
        cache = workdir / "set.npz"
        np.savez(cache, vectors=vectors, queries=vector_set.queries)
        if "lite" in engines:
            print("  milvus-lite:", flush=True)
            results["lite"] = _lite_in_own_process(workdir, cache, index_types)
        if "server" in engines:
            print("  Milvus server:", flush=True)
            with run_milvus_server(workdir / "server", timeout=300) as uri:
                results["server"] = run_engine(uri, vectors, vector_set.queries, _only(SERVER_INDEXES, index_types))
            memory = memory_per_million(workdir, vector_set.vectors, count=min(MEMORY_SIZE, size))
    rows = [row for engine, entries in results.items() for row in to_rows(engine, entries, size)]
    return rows, table(results, size, memory, diagnosis)


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="One engine of the scale benchmark, in a process of its own.")
    parser.add_argument("engine", choices=["lite"], help="milvus-lite, from a file that no other process holds.")
    parser.add_argument("--uri", required=True, help="milvus-lite file.")
    parser.add_argument("--set", required=True, type=Path, help="npz with vectors and queries.")
    parser.add_argument("--indexes", default="", help="Comma-separated index types (default: all).")
    args = parser.parse_args()
    with np.load(args.set) as stored:
        vectors, queries = stored["vectors"], stored["queries"]
    wanted = tuple(name for name in args.indexes.split(",") if name)
    results = run_engine(args.uri, vectors, queries, _only(LITE_INDEXES, wanted), log=_to_stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    os.environ.pop("MILVUS_URI", None)
    main()
