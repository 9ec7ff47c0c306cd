"""Indexing from an object store against indexing from local disk, and the cost of re-running a finished job.

python -m benchmarks.object_storage [--images 96] [--objects 100000] [--scan-rows 100000]
(also the object-storage part of `make bench`)

- images/s: the same JPEGs indexed from local disk and from a real S3 server (SeaweedFS on loopback), in one process
  with one loaded model, alternating rounds, each into a fresh collection; the ratio S3 / local is what matters
  (target >= 0.8: reads overlap decoding and embedding, so the model never waits on the network).
- list and skip: a prefix of small objects whose rows are all in the collection already; the time to list it and find
  that nothing needs reading (what a re-run of a finished indexing job costs).
- row scans, no object store involved: the rows under one prefix of a milvus-lite collection (what `sync` and that
  re-run read) and every stored vector of the namespace (what `duplicates` reads).
"""

import argparse
import io
import json
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from harness.s3_server import run_s3_server
from predictor.embedding.model_package import default_spec
from predictor.imaging.sample_catalogue import write_catalogue
from predictor.index.collection import ImageIndex, IndexRow
from predictor.index.duplicates import stored_rows
from predictor.index.ingestion import discover_images, index_images
from predictor.index.milvus import MilvusAccess
from predictor.index.object_sources import VERSION_FIELD
from predictor.index.source_listing import already_indexed, list_sources
from predictor.index.source_rows import rows_under

__all__ = ["measure", "main"]


def distinct_jpegs(count: int, workdir: Path) -> list[bytes]:
    """`count` different photos of catalogue size: the sample photos, shifted crops of each."""
    photos = [np.asarray(Image.open(path).convert("RGB")) for path in write_catalogue(workdir / "catalogue")]
    found = []
    shift = 0
    while len(found) < count:
        for pixels in photos:
            height, width = pixels.shape[:2]
            crop = pixels[shift % 17 : height - (shift % 13), shift % 11 : width - (shift % 19)]
            out = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(crop)).save(out, format="JPEG", quality=90)
            found.append(out.getvalue())
            if len(found) == count:
                break
        shift += 1
    return found


def _index_once(images, backbone, milvus_uri: str) -> float:
    index = ImageIndex.for_model(MilvusAccess(milvus_uri), f"bench_{uuid.uuid4().hex[:8]}", backbone.spec.identity)
    index.ensure_collection()
    started = time.perf_counter()
    report = index_images(images, backbone, index, batch_size=32)
    elapsed = time.perf_counter() - started
    assert report.added == len(images) and not report.failed, report.summary()
    index.access.call("drop", "drop_collection", index.collection)
    return len(images) / elapsed


def measure_throughput(s3, workdir: Path, count: int, rounds: int = 2) -> dict:
    from predictor.embedding.backbone import Backbone

    bodies = distinct_jpegs(count, workdir)
    local = workdir / "local"
    local.mkdir()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for number, body in enumerate(bodies):
        (local / f"{number:05d}.jpg").write_bytes(body)
        client.put_object(Bucket=bucket, Key=f"photos/{number:05d}.jpg", Body=body)
    backbone = Backbone(default_spec(), "auto", "auto")
    backbone.load()
    milvus_uri = str(workdir / "throughput.db")
    local_images = discover_images([str(local)])
    s3_rates, local_rates = [], []
    for _ in range(rounds):
        local_rates.append(_index_once(local_images, backbone, milvus_uri))
        s3_images = list_sources([f"s3://{bucket}/photos/"], 0, 1).images
        s3_rates.append(_index_once(s3_images, backbone, milvus_uri))
    best_s3, best_local = max(s3_rates), max(local_rates)
    return {
        "images": count,
        "local_images_per_s": [round(rate, 1) for rate in local_rates],
        "s3_images_per_s": [round(rate, 1) for rate in s3_rates],
        "ratio_s3_to_local": round(best_s3 / best_local, 3),
    }


def measure_listing(s3, workdir: Path, count: int) -> dict:
    """Upload `count` small objects, record rows for all of them, then time listing and skipping the prefix."""
    bucket = f"list-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    keys = [f"many/{number // 1000:03d}/{number:07d}.jpg" for number in range(count)]
    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=key.encode()), keys))
    upload_s = time.perf_counter() - started
    identity = default_spec().identity
    index = ImageIndex.for_model(MilvusAccess(str(workdir / "listing.db")), "listing", identity)
    index.ensure_collection()
    listing = list_sources([f"s3://{bucket}/many/"], 0, 1)
    vector = np.zeros(identity.dimension, dtype=np.float32)
    vector[0] = 1.0
    rows = [
        IndexRow(f"{number:064x}", vector, image.uri, {"filename": image.filename, VERSION_FIELD: image.version})
        for number, image in enumerate(listing.images)
    ]
    for start in range(0, len(rows), 2000):
        index.upsert("default", rows[start : start + 2000])
    index.settle()
    started = time.perf_counter()
    listing = list_sources([f"s3://{bucket}/many/"], 0, 1)
    listed_s = time.perf_counter() - started
    known = already_indexed(index, "default", listing, None)
    total_s = time.perf_counter() - started
    assert known.skipped == count and not known.pending, (known.skipped, len(known.pending))
    return {
        "objects": count,
        "upload_s": round(upload_s, 1),
        "list_s": round(listed_s, 2),
        "list_and_skip_s": round(total_s, 2),
        "objects_per_s": round(count / total_s),
    }


def measure_scan(workdir: Path, count: int) -> dict:
    """`count` rows of the default model's dimension under one prefix of a milvus-lite collection: the time to read the
    prefix's rows, and every stored vector of the namespace."""
    identity = default_spec().identity
    index = ImageIndex.for_model(MilvusAccess(str(workdir / "scan.db")), "scan", identity)
    index.ensure_collection()
    rng = np.random.default_rng(0)
    for start in range(0, count, 2000):
        vectors = rng.normal(size=(min(count, start + 2000) - start, identity.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [
            IndexRow(f"{start + n:064x}", vector, f"s3://bucket/many/{start + n:07d}.jpg", {VERSION_FIELD: str(n)})
            for n, vector in enumerate(vectors)
        ]
        index.upsert("default", rows)
    index.settle()
    started = time.perf_counter()
    under = sum(1 for _ in rows_under(index, "default", "s3://bucket/many/"))
    prefix_s = time.perf_counter() - started
    started = time.perf_counter()
    with_vectors = sum(len(batch) for batch in stored_rows(index, "default", None))
    vectors_s = time.perf_counter() - started
    index.close()
    assert under == with_vectors == count, (under, with_vectors, count)
    return {"rows": count, "prefix_rows_s": round(prefix_s, 2), "vectors_s": round(vectors_s, 2)}


def measure(images: int = 96, objects: int = 100_000, rounds: int = 2, scan_rows: int = 0) -> dict:
    result: dict = {"load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="image-search-object-bench-") as scratch:
        workdir = Path(scratch)
        if images or objects:
            (workdir / "store").mkdir()
            with run_s3_server(workdir / "store") as s3:
                saved = dict(os.environ)
                # The SDK reads the endpoint and keys from the environment, as in a pod; the other parts must not see
                # them.
                os.environ.update(s3.env())
                try:
                    if images:
                        result["throughput"] = measure_throughput(s3, workdir, images, rounds)
                        print(json.dumps({"throughput": result["throughput"]}), flush=True)
                    if objects:
                        result["listing"] = measure_listing(s3, workdir, objects)
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
        if scan_rows:
            result["scan"] = measure_scan(workdir, scan_rows)
    return result


def table(result: dict) -> str:
    """The figures as `make bench` prints them."""
    store = "a real S3 server on loopback; " if {"throughput", "listing"} & set(result) else ""
    lines = [f"Object storage ({store}load average {result['load_average']:.1f} at the start)"]
    if "throughput" in result:
        throughput = result["throughput"]
        lines.append(
            f"  indexing {throughput['images']} JPEGs: local disk {max(throughput['local_images_per_s'])} images/s, "
            f"S3 {max(throughput['s3_images_per_s'])} images/s, S3 / local {throughput['ratio_s3_to_local']:.2f}x "
            "(target >= 0.8x)"
        )
    if "listing" in result:
        listing = result["listing"]
        lines.append(
            f"  a re-run over {listing['objects']:,} indexed objects: listed in {listing['list_s']:.1f} s, listed and "
            f"skipped in {listing['list_and_skip_s']:.1f} s ({listing['objects_per_s']:,} objects/s), nothing read"
        )
    if "scan" in result:
        scan = result["scan"]
        lines.append(
            f"  {scan['rows']:,} rows in milvus-lite: the rows under their prefix read in "
            f"{scan['prefix_rows_s']:.1f} s (sync, a re-run's skip), with every vector in {scan['vectors_s']:.1f} s "
            "(duplicates)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="Images indexed from each source per round; 0 skips it.")
    parser.add_argument("--objects", type=int, default=100_000, help="Objects in the list-and-skip prefix; 0 skips it.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating local/S3 rounds; the best of each counts.")
    parser.add_argument("--scan-rows", type=int, default=100_000, help="Rows in the row-scan collection; 0 skips it.")
    args = parser.parse_args(argv)
    result = measure(args.images, args.objects, args.rounds, args.scan_rows)
    print(json.dumps(result, indent=2))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
