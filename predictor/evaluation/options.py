"""Compare preprocessing, architecture, pooling, projection and re-ranking options on the same sets, with the
in-process speed of each, measured in one interleaved run so a busy machine slows every option alike.

Options that differ only in projection or re-ranking share one forward pass per image. Projections are fitted on
a fitting set that shares no image with any evaluation set, so no figure comes from a model that saw its test images.
"""

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from predictor.embedding.model_package import ModelSpec, Pooling, bundled_spec, legacy_spec
from predictor.embedding.projection import Projection, fit_projection
from predictor.evaluation.retrieval import EvalSet, Scores, ranked_neighbours, retrieval_scores, score_embeddings
from predictor.imaging.decoding import ImageLimits, Preprocessing, load_pixels


@dataclass(frozen=True)
class ProjectionRecipe:
    dimension: int | None = None  # None centres only
    whitening_power: float = 0.0


@dataclass(frozen=True)
class QueryExpansion:
    """alpha-query expansion (Radenović et al.): the query plus its `neighbours` best hits weighted by score^alpha,
    searched again. Costs a second search per query."""

    neighbours: int = 3
    alpha: float = 3.0


@dataclass(frozen=True)
class Option:
    name: str
    base: Callable[[], ModelSpec]
    projection: ProjectionRecipe | None = None
    rerank: QueryExpansion | None = None


def _letterbox(size: int, pad: tuple[int, int, int] = (255, 255, 255)) -> Preprocessing:
    return Preprocessing(mode="letterbox", input_size=size, pad_color=pad)


GEM = Pooling("gem", 3.0)

BUILT_IN_OPTIONS: tuple[Option, ...] = (
    Option("lite0 center-crop (before)", legacy_spec),
    Option("lite0 resize", lambda: bundled_spec("efficientnet-lite0", preprocessing=Preprocessing("resize", 224))),
    Option("lite0 letterbox", lambda: bundled_spec("efficientnet-lite0", preprocessing=_letterbox(224))),
    Option(
        "lite0 letterbox gem", lambda: bundled_spec("efficientnet-lite0", preprocessing=_letterbox(224), pooling=GEM)
    ),
    Option("lite0 letterbox 288", lambda: bundled_spec("efficientnet-lite0", preprocessing=_letterbox(288))),
    Option(
        "lite0 letterbox 288 gem",
        lambda: bundled_spec("efficientnet-lite0", preprocessing=_letterbox(288), pooling=GEM),
    ),
    Option("lite1 letterbox", lambda: bundled_spec("efficientnet-lite1", preprocessing=_letterbox(240))),
    Option(
        "lite1 letterbox 272 gem",
        lambda: bundled_spec("efficientnet-lite1", preprocessing=_letterbox(272), pooling=GEM),
    ),
    Option(
        "lite2 letterbox 240 gem",
        lambda: bundled_spec("efficientnet-lite2", preprocessing=_letterbox(240), pooling=GEM),
    ),
    Option("lite2 letterbox", lambda: bundled_spec("efficientnet-lite2", preprocessing=_letterbox(260))),
    Option(
        "lite2 letterbox gem", lambda: bundled_spec("efficientnet-lite2", preprocessing=_letterbox(260), pooling=GEM)
    ),
)
PROJECTION_OPTIONS: tuple[tuple[str, ProjectionRecipe], ...] = (
    ("centre", ProjectionRecipe()),
    ("pca256", ProjectionRecipe(256)),
    ("pca256 whiten", ProjectionRecipe(256, 0.5)),
)
# Projections and re-ranking are tried on the bases they are likeliest to help.
PROJECTED_BASES = ("lite0 letterbox", "lite0 letterbox 288 gem", "lite2 letterbox gem")
RERANKED = ("lite2 letterbox gem + centre",)


def built_in_options(only: list[str] | None = None) -> list[Option]:
    """Every built-in option, or those named in `only` (the first option, the baseline of the ratios, always)."""
    options = list(BUILT_IN_OPTIONS)
    by_name = {option.name: option for option in options}
    for base in PROJECTED_BASES:
        for suffix, recipe in PROJECTION_OPTIONS:
            options.append(Option(f"{base} + {suffix}", by_name[base].base, projection=recipe))
    by_name = {option.name: option for option in options}
    for name in RERANKED:
        options.append(replace(by_name[name], name=f"{name} + aQE", rerank=QueryExpansion()))
    if only is None:
        return options
    unknown = sorted(set(only) - {option.name for option in options})
    if unknown:
        raise ValueError(f"no built-in option is named {', '.join(map(repr, unknown))}; see the names --compare lists")
    return [option for number, option in enumerate(options) if number == 0 or option.name in only]


def _base_key(spec: ModelSpec) -> tuple:
    return (spec.architecture, spec.weights_path, spec.preprocessing, spec.pooling)


def expand(queries: np.ndarray, gallery: np.ndarray, similarity: np.ndarray, expansion: QueryExpansion) -> np.ndarray:
    """Expanded, renormalised queries from each query's best `neighbours` in `similarity` (self already excluded)."""
    best = ranked_neighbours(similarity, expansion.neighbours)
    weights = np.clip(np.take_along_axis(similarity, best, axis=1), 0, None) ** expansion.alpha
    expanded = queries + (weights[..., None] * gallery[best]).sum(axis=1)
    return expanded / np.linalg.norm(expanded, axis=1, keepdims=True)


def score_with_expansion(
    eval_set: EvalSet, labelled: np.ndarray, originals: np.ndarray, copies: np.ndarray, expansion: QueryExpansion
) -> Scores:
    similarity = labelled @ labelled.T
    np.fill_diagonal(similarity, -np.inf)
    queries = expand(labelled, labelled, similarity, expansion)
    expanded = queries @ labelled.T
    np.fill_diagonal(expanded, -np.inf)
    labels = eval_set.labels
    p1, p5, map10, per_category = retrieval_scores(
        labels, labels[ranked_neighbours(expanded, min(10, len(labels) - 1))]
    )
    base = score_embeddings(eval_set, labelled, originals, copies)
    recall = base.near_duplicate_recall_at_1
    if eval_set.copies:
        gallery = np.concatenate([originals, labelled])
        copy_queries = expand(copies, gallery, copies @ gallery.T, expansion)
        best = ranked_neighbours(copy_queries @ gallery.T, 1)[:, 0]
        recall = float((best == np.array([original for original, _ in eval_set.copies])).mean())
    return replace(
        base,
        precision_at_1=p1,
        precision_at_5=p5,
        map_at_10=map10,
        near_duplicate_recall_at_1=recall,
        precision_at_5_by_category=per_category,
    )


@dataclass(frozen=True)
class OptionResult:
    name: str
    model: str
    dimension: int
    scores: dict[str, Scores]  # by set name
    images_per_second: float
    speed_ratio: float  # against the first option
    flops_per_image: float  # convolution and matrix multiply FLOPs of one forward pass, torch.utils.flop_counter
    flops_ratio: float  # against the first option


@dataclass(frozen=True)
class Comparison:
    sets: dict[str, str]  # set name -> description
    fitted_on: str
    speed: dict  # how speed was measured
    results: list[OptionResult]

    def table(self) -> str:
        set_names = list(self.sets)
        first = self.results[0].scores if self.results else {}
        with_copies = [name for name in set_names if first and first[name].near_duplicate_queries]
        header = ["option", "dim"]
        for name in set_names:
            header += [f"{name} p@1", f"{name} p@5", f"{name} mAP@10"]
        header += [f"{name} nd-recall@1" for name in with_copies]
        header += ["images/s", "speed", "FLOPs"]
        rows = [header, ["---"] * len(header)]
        for result in self.results:
            row = [result.name, str(result.dimension)]
            for name in set_names:
                s = result.scores[name]
                row += [f"{s.precision_at_1:.3f}", f"{s.precision_at_5:.3f}", f"{s.map_at_10:.3f}"]
            row += [f"{result.scores[name].near_duplicate_recall_at_1:.3f}" for name in with_copies]
            row += [f"{result.images_per_second:.1f}", f"{result.speed_ratio:.2f}x", f"{result.flops_ratio:.2f}x"]
            rows.append(row)
        return "\n".join("| " + " | ".join(row) + " |" for row in rows)


class _FeatureCache:
    """Raw (unprojected) unit features per base model, computed once per image."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._features: dict[tuple, dict[Path, np.ndarray]] = {}

    def prefetch(self, spec: ModelSpec, paths: list[Path]) -> None:
        self.get(spec, paths)

    def get(self, spec: ModelSpec, paths: list[Path]) -> np.ndarray:
        from predictor.embedding.projection_fitting import raw_features

        known = self._features.setdefault(_base_key(spec), {})
        missing = [path for path in dict.fromkeys(paths) if path not in known]
        if missing:
            known.update(zip(missing, raw_features(spec, missing, self.device), strict=True))
        return np.stack([known[path] for path in paths]) if paths else np.zeros((0, spec.feature_dimension))


def _apply(projection: Projection | None, features: np.ndarray) -> np.ndarray:
    return features if projection is None else projection.apply(features)


def _speed(specs: dict[str, ModelSpec], sample: list[bytes], rounds: int, device: str) -> dict[str, float]:
    """Images/s of decode + preprocessing + forward pass + projection, options interleaved round by round."""
    from predictor.embedding.backbone import Backbone

    backbones = {}
    for name, spec in specs.items():
        backbones[name] = Backbone(spec, device)
        backbones[name].load()
        backbones[name].warm_up((len(sample),))
    limits = ImageLimits()
    timings: dict[str, list[float]] = {name: [] for name in specs}
    for _ in range(rounds):
        for name, backbone in backbones.items():
            started = time.perf_counter()
            pixels = np.stack([load_pixels(data, limits, backbone.spec.preprocessing) for data in sample])
            backbone.run(pixels)
            timings[name].append(time.perf_counter() - started)
    return {name: len(sample) / statistics.median(values) for name, values in timings.items()}


def forward_flops(spec: ModelSpec, device: str = "cpu") -> float:
    """FLOPs of one image's forward pass and projection (convolutions and matrix products, as
    torch.utils.flop_counter counts them): a measure of compute that no other load on the machine changes."""
    from torch.utils.flop_counter import FlopCounterMode

    from predictor.embedding.backbone import Backbone

    backbone = Backbone(spec, device)
    backbone.load()
    side = spec.preprocessing.input_size
    with FlopCounterMode(display=False) as counter:
        backbone.run(np.zeros((1, side, side, 3), dtype=np.uint8))
    return float(counter.get_total_flops())


def compare(
    options: list[Option],
    sets: dict[str, EvalSet],
    fit_paths: list[Path],
    fitted_on: str,
    speed_rounds: int = 3,
    speed_images: int = 32,
    device: str = "cpu",
    work_dir: Path | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> Comparison:
    from predictor.embedding.projection_fitting import write_projected_package

    cache = _FeatureCache(device)
    every_path = []
    for eval_set in sets.values():
        every_path += [path for _, path in eval_set.labelled] + eval_set.originals + [p for _, p in eval_set.copies]
    results: dict[str, tuple[ModelSpec, dict[str, Scores]]] = {}
    speed_specs: dict[str, ModelSpec] = {}
    with tempfile.TemporaryDirectory() as scratch:
        packages = work_dir or Path(scratch)
        for number, option in enumerate(options):
            progress(f"[{number + 1}/{len(options)}] {option.name}")
            spec = base = option.base()
            cache.prefetch(base, every_path + (list(fit_paths) if option.projection else []))
            projection = None
            if option.projection is not None:
                recipe = option.projection
                projection = fit_projection(cache.get(base, fit_paths), recipe.dimension, recipe.whitening_power)
                fitted = {"source": fitted_on, "images": len(fit_paths)}
                spec = write_projected_package(
                    spec, projection, packages / f"option-{number}", fitted, recipe.whitening_power
                )
            scores = {}
            for set_name, eval_set in sets.items():
                labelled = _apply(projection, cache.get(base, [path for _, path in eval_set.labelled]))
                originals = _apply(projection, cache.get(base, eval_set.originals))
                copies = _apply(projection, cache.get(base, [path for _, path in eval_set.copies]))
                if option.rerank is None:
                    scores[set_name] = score_embeddings(eval_set, labelled, originals, copies)
                else:
                    scores[set_name] = score_with_expansion(eval_set, labelled, originals, copies, option.rerank)
            results[option.name] = (spec, scores)
            speed_specs[option.name] = spec
        first_set = next(iter(sets.values()))
        sample = [
            path.read_bytes() for _, path in first_set.labelled[:: max(len(first_set.labelled) // speed_images, 1)]
        ]
        sample = sample[:speed_images]
        progress(f"speed: {speed_rounds} interleaved rounds of {len(sample)} images")
        speeds = _speed(speed_specs, sample, speed_rounds, device)
        flops = {name: forward_flops(spec, device) for name, spec in speed_specs.items()}
    baseline = speeds[options[0].name]
    return Comparison(
        sets={name: f"{s.labels.size} images, {len(set(s.labels.tolist()))} categories" for name, s in sets.items()},
        fitted_on=f"{fitted_on} ({len(fit_paths)} images)",
        speed={"rounds": speed_rounds, "images": len(sample), "device": device, "baseline": options[0].name},
        results=[
            OptionResult(
                name=name,
                model=str(spec.identity),
                dimension=spec.dimension,
                scores=scores,
                images_per_second=speeds[name],
                speed_ratio=speeds[name] / baseline,
                flops_per_image=flops[name],
                flops_ratio=flops[name] / flops[options[0].name],
            )
            for name, (spec, scores) in results.items()
        ],
    )
