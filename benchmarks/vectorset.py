"""A realistic vector set for the search benchmark: real embeddings of real images and their variants, cached.

Embedding 200,000 augmented images one forward pass each costs hours on 2 CPU cores. This builds them from far fewer
passes and still gives real embeddings of real image variants:

1. Sources: real images on disk, by default the artwork of the Debian package `wesnoth-1.16-data` (portraits,
   story art, terrain, unit sprites, about 14,000 files) and scikit-image's photographs. Files are taken in a seeded
   order; transparent parts are put on white, as the server does.
2. For each source, two forward passes of the bundled EfficientNet-Lite0 (ImageNet weights) at SOURCE_SIZE pixels
   (instead of 224): the image as it is, and a mirrored copy with its brightness, contrast and saturation jittered
   by up to 20%.
3. Each pass keeps the network's last feature map before pooling (SOURCE_SIZE / 32 cells a side) and mean-pools random
   rectangular windows of it (each side 40-100% of the image): the embedding of that crop, as the model pools it,
   minus the crop's edge effects. `window_fidelity()` measures how close that is to embedding the crop itself.

Queries are made the same way from a third pass (a fresh jitter, not mirrored) of sources in the set, so each has real
relatives in it, and from sources that are not in the set at all. Every vector is L2-normalised, as the server
stores them. The set is cached under data/vectorsets/, keyed by everything that shapes it.
"""

import hashlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch import nn

from predictor.embedding.backbone import Backbone
from predictor.embedding.model_package import legacy_spec
from predictor.imaging.sample_catalogue import PHOTOS, photo

CACHE_DIR = Path("data/vectorsets")
DEFAULT_SOURCE_DIRS = (Path("/usr/share/games/wesnoth"),)
SOURCE_SIZE = 320
MIN_SOURCE_SIDE = 64
MIN_WINDOW_FRACTION = 0.4
JITTER = 0.2
PASS_BATCH = 8


@dataclass(frozen=True)
class Recipe:
    vectors: int
    queries: int = 300
    windows_per_pass: int = 50
    seed: int = 0
    source_size: int = SOURCE_SIZE
    model: str = ""

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class VectorSet:
    vectors: np.ndarray  # [N, D] float32, unit length
    queries: np.ndarray  # [Q, D] float32, unit length
    query_in_set: np.ndarray  # [Q] bool: the query's source has relatives in the set
    provenance: dict


def source_files(directories: tuple[Path, ...] = DEFAULT_SOURCE_DIRS) -> list[Path]:
    files = sorted(
        path for directory in directories for path in directory.rglob("*") if path.suffix.lower() in (".png", ".jpg")
    )
    if not files:
        raise FileNotFoundError(
            f"no source images under {', '.join(map(str, directories))}: install them with "
            "`apt-get install wesnoth-1.16-data` (hack/tools/bench-data.sh)"
        )
    return files


def _open_rgb(path: Path) -> Image.Image | None:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError):
        return None
    if min(image.size) < MIN_SOURCE_SIDE:
        return None
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _sources(files: list[Path], rng: random.Random) -> Iterator[tuple[str, Image.Image]]:
    for name in PHOTOS:
        yield f"skimage:{name}", Image.fromarray(photo(name)).convert("RGB")
    order = list(files)
    rng.shuffle(order)
    for path in order:
        image = _open_rgb(path)
        if image is not None:
            yield str(path), image


def _square(image: Image.Image, size: int) -> Image.Image:
    return ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)


def _jittered(image: Image.Image, rng: random.Random, mirror: bool) -> Image.Image:
    if mirror:
        image = ImageOps.mirror(image)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1 - JITTER, 1 + JITTER))
    return image


def feature_map_network(backbone: Backbone):
    """The backbone's network up to its global pooling: [N, C, H, W] maps instead of [N, C] features."""
    return backbone._network.feature_map


def _maps(backbone: Backbone, cut: nn.Module, images: list[Image.Image]) -> torch.Tensor:
    pixels = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    with torch.inference_mode():
        return cut(backbone._to_input(pixels, torch.float32)).float()


def _windows(feature_map: torch.Tensor, count: int, rng: random.Random) -> list[tuple[int, int, int, int]]:
    cells = feature_map.shape[-1]
    low = max(1, round(cells * MIN_WINDOW_FRACTION))
    boxes = []
    for _ in range(count):
        height, width = rng.randint(low, cells), rng.randint(low, cells)
        top, left = rng.randint(0, cells - height), rng.randint(0, cells - width)
        boxes.append((top, left, height, width))
    return boxes


def _pooled(feature_map: torch.Tensor, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    vectors = torch.stack([feature_map[:, y : y + h, x : x + w].mean(dim=(1, 2)) for y, x, h, w in boxes])
    return nn.functional.normalize(vectors, dim=1).numpy()


def build(recipe: Recipe, files: list[Path], backbone: Backbone) -> VectorSet:
    rng = random.Random(recipe.seed)
    cut = feature_map_network(backbone)
    per_source = 2 * recipe.windows_per_pass
    wanted_sources = -(-recipe.vectors // per_source)
    query_sources = recipe.queries // 2
    sources = _sources(files, rng)
    chunks: list[np.ndarray] = []
    used: list[str] = []
    started = time.perf_counter()
    batch: list[tuple[str, Image.Image]] = []

    def flush() -> None:
        images = [_square(image, recipe.source_size) for _, image in batch]
        passes = images + [_jittered(image, rng, mirror=True) for image in images]
        maps = _maps(backbone, cut, passes)
        for feature_map in maps:
            chunks.append(_pooled(feature_map, _windows(feature_map, recipe.windows_per_pass, rng)))
        used.extend(name for name, _ in batch)
        batch.clear()

    for name, image in sources:
        batch.append((name, image))
        if len(batch) == PASS_BATCH:
            flush()
            if len(used) % 200 == 0:
                print(f"    {len(used)} sources, {time.perf_counter() - started:.0f} s", flush=True)
        if len(used) + len(batch) >= wanted_sources:
            break
    if batch:
        flush()
    vectors = np.concatenate(chunks)[: recipe.vectors]
    if len(vectors) < recipe.vectors:
        raise ValueError(f"only {len(used)} usable source images, {len(vectors)} vectors; {recipe.vectors} wanted")

    # Queries: a fresh jitter of sources in the set, and sources the set never saw.
    in_set = rng.sample(used, query_sources)
    outside = [next(sources) for _ in range(recipe.queries - query_sources)]
    lookup = dict(_named_images(in_set, files))
    query_images = [_jittered(_square(lookup[name], recipe.source_size), rng, False) for name in in_set]
    query_images += [_square(image, recipe.source_size) for _, image in outside]
    queries = []
    for start in range(0, len(query_images), PASS_BATCH):
        for feature_map in _maps(backbone, cut, query_images[start : start + PASS_BATCH]):
            queries.append(_pooled(feature_map, _windows(feature_map, 1, rng))[0])
    provenance = {
        "recipe": asdict(recipe),
        "sources": len(used),
        "skimage_photos": sum(name.startswith("skimage:") for name in used),
        "query_sources_in_set": len(in_set),
        "query_sources_outside": len(outside),
        "build_s": round(time.perf_counter() - started, 1),
        "model": str(backbone.spec.identity),
    }
    return VectorSet(vectors, np.stack(queries), np.array([True] * len(in_set) + [False] * len(outside)), provenance)


def _named_images(names: list[str], files: list[Path]) -> Iterator[tuple[str, Image.Image]]:
    for name in names:
        if name.startswith("skimage:"):
            yield name, Image.fromarray(photo(name.removeprefix("skimage:"))).convert("RGB")
        else:
            yield name, _open_rgb(Path(name))


def window_fidelity(backbone: Backbone, files: list[Path], samples: int = 24, seed: int = 1) -> dict:
    """Cosine between a pooled square window and the real embedding of the same crop through the serving path."""
    rng = random.Random(seed)
    cut = feature_map_network(backbone)
    cosines = []
    for _, (_, image) in zip(range(samples), _sources(files, rng), strict=False):
        square = _square(image, SOURCE_SIZE)
        feature_map = _maps(backbone, cut, [square])[0]
        cells = feature_map.shape[-1]
        side = rng.randint(max(1, round(cells * MIN_WINDOW_FRACTION)), cells)
        top, left = rng.randint(0, cells - side), rng.randint(0, cells - side)
        pooled = _pooled(feature_map, [(top, left, side, side)])[0]
        scale = SOURCE_SIZE / cells
        crop = square.crop((left * scale, top * scale, (left + side) * scale, (top + side) * scale))
        crop = crop.resize((backbone.spec.preprocessing.input_size,) * 2, Image.Resampling.BILINEAR)
        real = backbone.run(np.array(crop, dtype=np.uint8)[np.newaxis]).embeddings[0]
        cosines.append(float(pooled @ real))
    return {"samples": len(cosines), "mean_cosine": float(np.mean(cosines)), "min_cosine": float(np.min(cosines))}


def cache_path(size: int, queries: int = 300, cache_dir: Path = CACHE_DIR) -> Path:
    spec = legacy_spec()
    recipe = Recipe(vectors=size, queries=queries, model=str(spec.identity))
    return cache_dir / f"{spec.name}-{size}-{recipe.key()}.npz"


def load_or_build(size: int, queries: int = 300, cache_dir: Path = CACHE_DIR) -> VectorSet:
    """The cached set for `size` vectors, built on first use (34 minutes on 2 busy cores for 200,000).

    Made with the bundled EfficientNet-Lite0 as it was served before 0.2 (ImageNet weights, average pooling), so the
    cache stays valid across default-model changes; `benchmarks.scale` applies the served default's projection."""
    spec = legacy_spec()
    recipe = Recipe(vectors=size, queries=queries, model=str(spec.identity))
    path = cache_path(size, queries, cache_dir)
    if path.exists():
        with np.load(path) as stored:
            return VectorSet(
                stored["vectors"], stored["queries"], stored["query_in_set"], json.loads(str(stored["provenance"]))
            )
    backbone = Backbone(spec, "cpu", "fp32")
    backbone.load()
    files = source_files()
    vector_set = build(recipe, files, backbone)
    vector_set.provenance["source_dirs"] = [str(directory) for directory in DEFAULT_SOURCE_DIRS]
    vector_set.provenance["source_files_found"] = len(files)
    vector_set.provenance["window_fidelity"] = window_fidelity(backbone, files)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(
        partial,
        vectors=vector_set.vectors,
        queries=vector_set.queries,
        query_in_set=vector_set.query_in_set,
        provenance=json.dumps(vector_set.provenance),
    )
    partial.rename(path)
    return vector_set
