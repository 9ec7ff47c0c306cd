"""The default threshold of `image-search duplicates`, chosen on planted copies of real photographs.

Originals: the near-duplicate set's real photographs (scikit-image's and GCompris's, `predictor.eval_sets._photos`).
Each gets four planted copies: resized to 50%, cropped by 10% a side, re-encoded as a JPEG of quality 30, brightened
by 30%. A second set gives the same originals four copies cropped off the grid of crops the signatures compare (0 to
15% off each side, drawn independently, so the aspect ratio changes too), one of them also brightened or darkened by
up to 30%, one halved in size, one with its contrast changed by up to 30%, all re-encoded at JPEG quality 30 to 90.
Every picture is embedded by the bundled model and given its copy signature as the indexer does; a pair is a
true duplicate when both come from the same original. A pair's score is the command's: for the pairs the embedding
proposes (score >= CANDIDATE_SCORE), the signatures' crop likeness or, where higher, their aligned overlap's; side by
side, the crop likeness alone (the command before overlaps were aligned) and the embedding's score alone (what a
collection indexed before signatures gets). For each threshold T, pair precision and pair recall of "score >= T"
over all pairs are printed, for the pairs themselves and for the pairs that share a cluster (connected components,
what the command writes), and the range of T where both pair figures are at least 0.95. Where the Debian package
wesnoth-1.16-data is installed, a third set plants the same four copies of 50 of its unit sprites and portraits among
2,000 of its other pictures, nearly all on transparent backgrounds, and prints what the command joins there at the
default threshold. And the originals in grey and with their hues turned: how many such pairs the command finds
(the signatures are grey, so colour alone does not keep two pictures apart).

Usage: python -m benchmarks duplicate-threshold [--limit N]
"""

import argparse
import functools
import io
import math
import random
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from predictor.imaging.decoding import to_rgb

EDITS = ("resized", "cropped", "reencoded", "brightened")


def planted_copy(data: bytes, edit: str) -> bytes:
    # Copies of what the indexer sees: a cut-out on the decoder's background, not on its hidden (mostly black) pixels.
    image = to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    width, height = image.size
    quality = 90
    if edit == "resized":
        image = image.resize((max(width // 2, 32), max(height // 2, 32)), Image.Resampling.BICUBIC)
    elif edit == "cropped":
        image = image.crop((width // 10, height // 10, width - width // 10, height - height // 10))
    elif edit == "reencoded":
        quality = 30
    else:
        image = ImageEnhance.Brightness(image).enhance(1.3)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def off_grid_copy(data: bytes, edit: str, rng: random.Random) -> bytes:
    """A copy cropped by a random 0 to 15% off each side, then edited as `edit` says, then re-encoded."""
    image = to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    width, height = image.size
    left, top, right, bottom = (rng.uniform(0.0, 0.15) for _ in range(4))
    image = image.crop(
        (round(width * left), round(height * top), round(width * (1 - right)), round(height * (1 - bottom)))
    )
    if edit == "brightened":
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    elif edit == "resized":
        image = image.resize((max(image.width // 2, 32), max(image.height // 2, 32)), Image.Resampling.BICUBIC)
    elif edit == "contrast":
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=rng.randint(30, 90))
    return out.getvalue()


OFF_GRID_EDITS = ("cropped", "brightened", "resized", "contrast")
RECOLOURED_EDITS = ("greyscale", "hue turned")


def recoloured_copy(data: bytes, edit: str) -> bytes:
    """The picture in grey, or with every hue turned by a third of the circle (red to green, green to blue, blue to
    red): the same photograph in other colours, as a product's colour variants are."""
    image = to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    if edit == "greyscale":
        image = image.convert("L").convert("RGB")
    else:
        hue, saturation, value = image.convert("HSV").split()
        image = Image.merge("HSV", (hue.point(lambda level: (level + 85) % 256), saturation, value)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def planted_set(directory: Path, limit: int | None = None, kind: str = "planted") -> tuple[list[Path], list[int]]:
    """Files of the originals and their copies (`kind`: planted, off-grid or recoloured), and the original each one
    comes from."""
    from tools.eval_sets import _photos

    rng = random.Random(1)
    files, sources = [], []
    for number, (name, data) in enumerate(_photos()):
        if limit is not None and number >= limit:
            break
        stem = name.rsplit(".", 1)[0]
        if kind == "off-grid":
            copies = [(edit, off_grid_copy(data, edit, rng)) for edit in OFF_GRID_EDITS]
        elif kind == "recoloured":
            copies = [(edit, recoloured_copy(data, edit)) for edit in RECOLOURED_EDITS]
        else:
            copies = [(edit, planted_copy(data, edit)) for edit in EDITS]
        for edit, content in [("original", data), *copies]:
            path = directory / f"{stem}--{edit}.jpg"
            path.write_bytes(content)
            files.append(path)
            sources.append(number)
    return files, sources


def signatures_of(files: list[Path]) -> list[str]:
    """Each file's copy signature, from the picture as the indexer decodes it."""
    from predictor.imaging.copy_signature import signature_of
    from predictor.imaging.decoding import ImageLimits, decode_image

    return [signature_of(decode_image(path.read_bytes(), ImageLimits()).image) for path in files]


def crop_scores(vectors: np.ndarray, signatures: list[str]) -> np.ndarray:
    """Every pair's crop likeness (the larger of both ways round, as the command visits both rows) where the embedding
    proposes the pair; -1 (never joined) where it does not."""
    from predictor.imaging.copy_signature import copy_scores
    from predictor.index.duplicates import CANDIDATE_SCORE

    one_way = np.array([copy_scores(signature, signatures) for signature in signatures], dtype=np.float32)
    return np.where(vectors @ vectors.T >= CANDIDATE_SCORE, np.maximum(one_way, one_way.T), -1.0)


def command_scores(vectors: np.ndarray, signatures: list[str]) -> np.ndarray:
    """Every pair's score as `image-search duplicates` scores it: the crop likeness, or the aligned overlap's less
    OVERLAP_DISCOUNT where that is higher and the crops reach OVERLAP_GATE. The command aligns overlaps only for pairs
    below its threshold; taking the larger everywhere gives the same verdict at every threshold."""
    from predictor.imaging.copy_overlap import overlap_score
    from predictor.index.duplicates import OVERLAP_GATE, with_overlap

    scores = crop_scores(vectors, signatures)
    for first, second in zip(*np.nonzero(np.triu(scores >= OVERLAP_GATE, k=1)), strict=True):
        aligned = functools.partial(overlap_score, signatures[first], signatures[second])
        scores[first, second] = scores[second, first] = with_overlap(float(scores[first, second]), aligned, math.inf)
    return scores


def pair_scores(scores: np.ndarray, sources: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every unordered pair from the square matrix `scores`, and whether it is a planted pair."""
    upper = np.triu_indices(len(scores), k=1)
    labels = np.asarray(sources)
    return scores[upper], labels[upper[0]] == labels[upper[1]]


def co_clustered(scores: np.ndarray, threshold: float) -> np.ndarray:
    """For every unordered pair, whether the two land in one cluster: connected components of the pairs scoring at
    least `threshold` in the square matrix `scores`, as `image-search duplicates` writes them."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    _, labels = connected_components(csr_matrix(scores >= threshold), directed=False)
    upper = np.triu_indices(len(scores), k=1)
    return labels[upper[0]] == labels[upper[1]]


def _precision_recall(found: np.ndarray, planted: np.ndarray) -> tuple[float, float]:
    true = int((found & planted).sum())
    return true / max(1, int(found.sum())), true / max(1, int(planted.sum()))


def sweep(matrix: np.ndarray, sources: list[int], thresholds: np.ndarray) -> list[dict]:
    """Pair precision and recall of "score >= T", and of "in one cluster" (what a user gets), by threshold."""
    scores, planted = pair_scores(matrix, sources)
    rows = []
    for threshold in thresholds:
        precision, recall = _precision_recall(scores >= threshold, planted)
        cluster_precision, cluster_recall = _precision_recall(co_clustered(matrix, threshold), planted)
        rows.append(
            {
                "threshold": round(float(threshold), 3),
                "precision": precision,
                "recall": recall,
                "cluster_precision": cluster_precision,
                "cluster_recall": cluster_recall,
            }
        )
    return rows


def sprite_set(directory: Path, originals: int = 50, others: int = 2000) -> tuple[list[Path], list[int]]:
    """Planted copies (EDITS) of `originals` unit sprites and portraits of a game's artwork, among `others` of its other
    pictures (sprites, portraits, terrain tiles), nearly all on transparent backgrounds; each other picture is a
    source of its own (a negative number)."""
    from tools.eval_sets import GAME_ART

    pictures = sorted(GAME_ART.rglob("*.png"))
    random.Random(0).shuffle(pictures)
    sprites = [path for path in pictures[others:] if {"units", "portraits"} & set(path.parts)]
    random.Random(1).shuffle(sprites)
    files, sources = [], []
    for number, path in enumerate(sprites[:originals]):
        data = path.read_bytes()
        for edit, content in [("original", data), *[(edit, planted_copy(data, edit)) for edit in EDITS]]:
            copy = directory / f"{number}--{edit}.{'png' if edit == 'original' else 'jpg'}"
            copy.write_bytes(content)
            files.append(copy)
            sources.append(number)
    files += pictures[:others]
    sources += [-1 - number for number in range(others)]
    return files, sources


def neighbour_pairs(vectors: np.ndarray, signatures: list[str], threshold: float) -> dict[tuple[int, int], float]:
    """The pairs `image-search duplicates` joins at `threshold`, scored as it scores them: each picture's NEIGHBOURS
    nearest by the embedding scoring at least CANDIDATE_SCORE, the crops both ways round, then the aligned overlap."""
    from predictor.imaging.copy_overlap import overlap_score
    from predictor.imaging.copy_signature import copy_scores
    from predictor.index.duplicates import CANDIDATE_SCORE, NEIGHBOURS, with_overlap

    similar = vectors @ vectors.T
    np.fill_diagonal(similar, -2.0)
    crops: dict[tuple[int, int], float] = {}
    for row, nearest in enumerate(np.argsort(-similar, axis=1)[:, :NEIGHBOURS]):
        candidates = [int(other) for other in nearest if similar[row, other] >= CANDIDATE_SCORE]
        likeness = copy_scores(signatures[row], [signatures[i] for i in candidates])
        for other, score in zip(candidates, likeness, strict=True):
            pair = (min(row, other), max(row, other))
            crops[pair] = max(crops.get(pair, -1.0), score if score is not None else float(similar[row, other]))
    joined = {}
    for (first, second), score in crops.items():
        score = with_overlap(score, functools.partial(overlap_score, signatures[first], signatures[second]), threshold)
        if score >= threshold:
            joined[(first, second)] = score
    return joined


def _sprite_report(sources: list[int], vectors: np.ndarray, signatures: list[str]) -> None:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    from predictor.index.duplicates import DEFAULT_THRESHOLD

    joined = neighbour_pairs(vectors, signatures, DEFAULT_THRESHOLD)
    labels = np.asarray(sources)
    originals = int(labels.max()) + 1
    planted = originals * len(EDITS) * (len(EDITS) + 1) // 2
    found = sum(labels[a] == labels[b] for a, b in joined)
    with_planted = sum(labels[a] != labels[b] and max(labels[a], labels[b]) >= 0 for a, b in joined)
    others = len(joined) - found - with_planted
    first, second = (np.array([pair[side] for pair in joined], dtype=int) for side in (0, 1))
    graph = csr_matrix((np.ones(len(joined)), (first, second)), shape=(len(sources), len(sources)))
    sizes = np.bincount(connected_components(graph, directed=False)[1])
    clusters = sorted((int(size) for size in sizes if size > 1), reverse=True)
    print(f"{originals} sprites with {len(EDITS)} copies each among {len(sources) - originals * 5} other pictures")
    print(f"  at T {DEFAULT_THRESHOLD}: planted pairs found {found} of {planted} ({found / planted:.3f})")
    print(f"  pairs of a planted picture with another picture: {with_planted}; pairs of other pictures: {others}")
    print(f"  {len(clusters)} clusters of {sum(clusters)} pictures, the largest {clusters[:5]}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N originals.")


def run(args: argparse.Namespace) -> int:
    from predictor.embedding.backbone import Backbone
    from predictor.embedding.file_embedding import backbone_embedder
    from predictor.embedding.model_package import default_spec

    backbone = Backbone(default_spec(), "cpu", "fp32", compile_mode="off")
    backbone.load()
    for kind, edits in (("planted", EDITS), ("off-grid", OFF_GRID_EDITS)):
        with tempfile.TemporaryDirectory() as scratch:
            files, sources = planted_set(Path(scratch), args.limit, kind)
            vectors = backbone_embedder(backbone)(files)
            signatures = signatures_of(files)
        print("copies cropped off the grid" if kind == "off-grid" else "planted copies")
        _report(files, sources, vectors, signatures, edits)
    with tempfile.TemporaryDirectory() as scratch:
        files, sources = planted_set(Path(scratch), args.limit, "recoloured")
        vectors = backbone_embedder(backbone)(files)
        signatures = signatures_of(files)
    print("the same photographs in other colours (colour is not compared: these are found as copies)")
    _recoloured_report(vectors, signatures)
    from tools.eval_sets import GAME_ART

    if not GAME_ART.is_dir():
        print(f"sprites: skipped, {GAME_ART} is missing (Debian package wesnoth-1.16-data)")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        files, sources = sprite_set(Path(scratch))
        vectors = backbone_embedder(backbone)(files)
        signatures = signatures_of(files)
    print("sprites among a game's artwork")
    _sprite_report(sources, vectors, signatures)
    return 0


def _recoloured_report(vectors: np.ndarray, signatures: list[str]) -> None:
    from predictor.index.duplicates import DEFAULT_THRESHOLD

    scores, embedded = command_scores(vectors, signatures), vectors @ vectors.T
    step = 1 + len(RECOLOURED_EDITS)
    for number, edit in enumerate(RECOLOURED_EDITS, start=1):
        pairs = [(i, i + number) for i in range(0, len(signatures), step)]
        found = sum(scores[pair] >= DEFAULT_THRESHOLD for pair in pairs)
        print(
            f"  {edit:<10} original-copy pairs at T {DEFAULT_THRESHOLD:.2f}: {found} of {len(pairs)}; embedding score "
            f"median {np.median([embedded[pair] for pair in pairs]):.3f}"
        )


def _report(files: list[Path], sources: list[int], vectors: np.ndarray, signatures: list[str], edits) -> None:
    matrices = {
        "signatures (the command)": command_scores(vectors, signatures),
        "signatures, crops alone": crop_scores(vectors, signatures),
        "embedding alone": vectors @ vectors.T,
    }
    scores, planted = pair_scores(matrices["signatures (the command)"], sources)
    print(f"{len(set(sources))} originals, {len(files)} pictures, {int(planted.sum())} planted pairs of {len(scores)}")
    for name, matrix in matrices.items():
        print(name)
        for number, edit in enumerate(edits, start=1):
            # Each original is followed by its copies in EDITS order.
            edited = np.array([matrix[i, i + number] for i in range(0, len(files), 1 + len(edits))])
            print(f"  {edit:<10} original-copy score: min {edited.min():.3f}, median {np.median(edited):.3f}")
        rows = sweep(matrix, sources, np.arange(0.50, 0.99, 0.01))
        for row in rows:
            print(
                f"  T {row['threshold']:.2f}  pairs: precision {row['precision']:.3f} recall {row['recall']:.3f}"
                f"  clusters: precision {row['cluster_precision']:.3f} recall {row['cluster_recall']:.3f}"
            )
        good = [row["threshold"] for row in rows if row["precision"] >= 0.95 and row["recall"] >= 0.95]
        print(f"  both >= 0.95 for T in [{min(good):.2f}, {max(good):.2f}]" if good else "  no T gives both >= 0.95")
        scores, planted = pair_scores(matrix, sources)
        print(f"  lowest planted pair: {scores[planted].min():.3f}; highest other pair: {scores[~planted].max():.3f}")
