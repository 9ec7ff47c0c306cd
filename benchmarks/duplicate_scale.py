"""The run time of `image-search duplicates` by collection size, on the Milvus server: is it near-linear?

Each size is a collection of the bundled model's identity and dimension, at the default index, built through
`ImageIndex` as an indexing job builds it: synthetic vectors with neighbours at every scale (the filtered-search
bench's catalogue, whose nearest pairs score about 0.84) plus planted copies of 1% of the rows, each its original
with noise (scores 0.92 to 0.99). Every row has a copy signature, as rows indexed today have: each row of a leaf
cluster (the rows the embedding proposes to each other) gets a different tile of a real picture (the near-duplicate
set's photographs, cut into TILES x TILES tiles that share no pixels, the nearly flat ones left out), and each planted
copy its original's tile edited as the threshold bench edits copies (resized, cropped, re-encoded or brightened). So
the signature comparisons, and the alignments of the pairs that come close, cost what they cost on real pictures.
Unlike a real embedding, this one proposes tiles of unrelated pictures to each other, so the pairs clustered that are
not planted count what the signatures alone join among random pairs of real tiles. The real command runs in a
process of its own, as a user runs it, and is timed from start to exit; its clusters are checked against the planted
pairs, so a fast run that found nothing shows.

Usage: python -m benchmarks duplicate-scale [--sizes 20000,200000]
"""

import argparse
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DEFAULT_SIZES = (20_000, 200_000)
PLANTED_SHARE = 0.01
INSERT_CHUNK = 2_000
COLLECTION = "duplicates_{size}"
TILES = 4
# Tiles kept: a grey standard deviation of at least this many times what counts as one flat colour.
TEXTURED = 6
# Tiles are kept this small: a signature is a 48 x 48 thumbnail.
TILE_SIDE = 128


def planted_catalogue(size: int, dimension: int, seed: int = 0) -> tuple[np.ndarray, dict[int, int], np.ndarray]:
    """`size` unit vectors, the last 1% of them noisy copies of earlier rows; {copy row: original row}; the leaf
    cluster of each row that is not a copy."""
    from benchmarks.filtered_search import catalogue

    copies = max(1, round(size * PLANTED_SHARE))
    vectors, leaf, *_ = catalogue(size - copies, dimension, seed)
    rng = np.random.default_rng(seed + 1)
    originals = rng.choice(len(vectors), copies, replace=False)
    # cos(original, copy) ~ 1 / sqrt(1 + dimension * sigma^2): sigma from 0.0025 to 0.012 gives about 0.99 to 0.92
    sigma = rng.uniform(0.0025, 0.012, copies)[:, np.newaxis]
    noisy = vectors[originals] + sigma * rng.standard_normal((copies, dimension)).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    planted = {len(vectors) + number: int(original) for number, original in enumerate(originals)}
    return np.concatenate([vectors, noisy.astype(np.float32)]), planted, leaf


def _tiles(seed: int = 0) -> list[Image.Image]:
    """TILES x TILES tiles of every real picture, none sharing a pixel with another, in a seeded random order (so that
    a leaf cluster's rows get tiles of different pictures); tiles that are nearly one colour or stand on one are left
    out, since copies of those are found by brightness alone."""
    from predictor.imaging.copy_signature import FLAT, foreground_of, pixels_of, signature_of
    from predictor.imaging.decoding import to_rgb
    from tools.eval_sets import _photos

    tiles = []
    for _, data in _photos():
        image = to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
        width, height = image.size
        for row in range(TILES):
            for column in range(TILES):
                box = (
                    width * column // TILES,
                    height * row // TILES,
                    width * (column + 1) // TILES,
                    height * (row + 1) // TILES,
                )
                tile = image.crop(box)
                tile.thumbnail((TILE_SIDE, TILE_SIDE))
                pixels = pixels_of(signature_of(tile))
                if pixels is not None and pixels.std() >= TEXTURED * FLAT and foreground_of(pixels) is None:
                    tiles.append(tile)
    random.Random(seed).shuffle(tiles)
    return tiles


def planted_signatures(leaf: np.ndarray, planted: dict[int, int]) -> list[str]:
    """Each row's signature: rows of one leaf cluster different tiles, each copy an edited copy of its original's."""
    from benchmarks.duplicate_threshold import EDITS, planted_copy
    from predictor.imaging.copy_signature import signature_of
    from predictor.imaging.decoding import to_rgb

    tiles = _tiles()
    tile_of = np.empty(len(leaf), dtype=np.int64)
    # consecutive in leaf order, so a tile comes back only after len(tiles) rows: never twice in one leaf cluster
    tile_of[np.argsort(leaf, kind="stable")] = np.arange(len(leaf)) % len(tiles)
    signatures = {tile: signature_of(tiles[tile]) for tile in set(tile_of.tolist())}
    rows = [signatures[int(tile)] for tile in tile_of]
    for number, (copy, original) in enumerate(sorted(planted.items())):
        assert copy == len(rows)
        out = io.BytesIO()
        tiles[int(tile_of[original])].save(out, format="PNG")
        edited = Image.open(io.BytesIO(planted_copy(out.getvalue(), EDITS[number % len(EDITS)])))
        rows.append(signature_of(to_rgb(edited)))
    return rows


def build(uri: str, size: int) -> dict[int, int]:
    from benchmarks.filtered_search import sealed_and_indexed
    from predictor.embedding.model_package import default_spec
    from predictor.index.collection import ImageIndex, IndexRow
    from predictor.index.milvus import MilvusAccess
    from predictor.index.search_options import DEFAULT_NAMESPACE

    identity = default_spec().identity
    vectors, planted, leaf = planted_catalogue(size, identity.dimension)
    signatures = planted_signatures(leaf, planted)
    index = ImageIndex.for_model(MilvusAccess(uri), COLLECTION.format(size=size), identity)
    index.ensure_collection()
    for first in range(0, size, INSERT_CHUNK):
        rows = [
            IndexRow(f"{i:064x}", vectors[i], f"synthetic/{i}.jpg", {}, signatures[i])
            for i in range(first, min(size, first + INSERT_CHUNK))
        ]
        index.upsert(DEFAULT_NAMESPACE, rows)
    sealed_and_indexed(index, size)
    index.close()
    return planted


def run_command(uri: str, size: int, out: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "predictor.cli",
            "duplicates",
            "--milvus-uri",
            uri,
            "--collection",
            COLLECTION.format(size=size),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"image-search duplicates failed:\n{result.stderr[-3000:]}")
    return elapsed, result.stderr.strip().splitlines()[-1]


def score(out: Path, planted: dict[int, int]) -> dict:
    """Planted pairs found, and pairs in clusters that are not planted."""
    found_pairs = set()
    for line in out.read_text().splitlines():
        found_pairs.update(combinations(sorted(int(image_id, 16) for image_id in json.loads(line)["ids"]), 2))
    # a row picked twice as an original makes its two copies a planted pair too
    by_original: dict[int, list[int]] = {}
    for copy, original in planted.items():
        by_original.setdefault(original, [original]).append(copy)
    truth = {pair for group in by_original.values() for pair in combinations(sorted(group), 2)}
    return {"planted_pairs": len(truth), "found": len(truth & found_pairs), "other_pairs": len(found_pairs - truth)}


def measure(sizes: list[int], log=print) -> list[dict]:
    from harness.milvus_server import run_milvus_server

    results = []
    with tempfile.TemporaryDirectory(prefix="image-search-duplicate-scale-") as scratch:
        with run_milvus_server(Path(scratch) / "milvus", timeout=300) as uri:
            for size in sizes:
                started = time.perf_counter()
                planted = build(uri, size)
                built_s = time.perf_counter() - started
                elapsed, summary = run_command(uri, size, Path(scratch) / f"clusters-{size}.jsonl")
                figures = {
                    "rows": size,
                    "build_s": round(built_s),
                    "duplicates_s": round(elapsed, 1),
                    "rows_per_s": round(size / elapsed),
                    "summary": summary,
                    **score(Path(scratch) / f"clusters-{size}.jsonl", planted),
                }
                log(json.dumps(figures))
                results.append(figures)
    return results


def table(results: list[dict]) -> str:
    lines = [
        "| rows | `image-search duplicates` s | rows/s | planted pairs found | other pairs clustered |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        lines.append(
            f"| {row['rows']:,} | {row['duplicates_s']:.0f} | {row['rows_per_s']:,} | "
            f"{row['found']} of {row['planted_pairs']} | {row['other_pairs']} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="Collection sizes, comma-separated.")


def run(args: argparse.Namespace) -> int:
    results = measure([int(size) for size in args.sizes.split(",")])
    print(table(results))
    return 0
