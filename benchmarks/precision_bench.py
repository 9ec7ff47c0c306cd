"""Precision side by side: the in-process limit, the probe's cosine against fp32 and retrieval quality at each one.

Every precision the hardware runs natively is loaded once and then measured in interleaved rounds (fp32, bf16, int8,
fp32, ...), so load from other work on the machine falls on all of them alike; each one's best round counts. A
precision is measured even when it misses the probe bar, so the table shows what it would cost and gain; the
"serves" column says what the server would do with it.

Retrieval quality is measured twice per precision: catalogue and queries both at that precision (a collection indexed
by a server at that precision), and catalogue at fp32 with queries at that precision (a collection indexed at fp32
and served at another). The second answers whether precision must be part of the model identity.
"""

import time
from dataclasses import dataclass, field, replace

import numpy as np

from benchmarks.inprocess import pipelined_throughput, single_image_latencies
from benchmarks.stats import Row
from predictor.embedding import precision
from predictor.embedding.backbone import Backbone, resolve_device
from predictor.embedding.file_embedding import backbone_embedder
from predictor.embedding.model_package import PRECISIONS, default_spec
from predictor.embedding.probe_images import calibration_pixels
from predictor.evaluation.retrieval import (
    EvalSet,
    ranked_neighbours,
    retrieval_scores,
    score_embeddings,
)
from predictor.imaging.decoding import ImageLimits, load_pixels

BATCH = 8
K = 5


@dataclass
class Quality:
    precision_at_k: float
    near_duplicate_recall_at_1: float


@dataclass
class PrecisionResult:
    name: str
    serves: str
    load_s: float
    probe_min_cosine: float | None
    unseen_min_cosine: float | None
    rates: list[float] = field(default_factory=list)
    forward_rates: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    same: Quality | None = None
    mixed: Quality | None = None


def load_all(device: str, names: tuple[str, ...] | None = None) -> dict[str, tuple[Backbone, str, float]]:
    """Each native precision as the server would load it, eager and (on a CPU) compiled; one that misses the probe bar
    is loaded again with no bar, so that its speed and quality are measured all the same. Keys are labels such as
    "bf16 compiled"; "fp32" is eager fp32, the baseline of every ratio."""
    spec = replace(default_spec(), precisions=PRECISIONS)
    resolved = resolve_device(device)
    native = precision.native_precisions(resolved)
    wanted = [name for name in (names or tuple(reversed(native))) if name == "fp32" or name in native]
    # int8 is compiled its own way, and CUDA is never compiled.
    compiles = {name: resolved.type == "cpu" and name != "int8" for name in wanted}
    plan = [
        (f"{name} compiled" if compile_mode == "on" else name, name, compile_mode)
        for name in dict.fromkeys(["fp32", *wanted])
        for compile_mode in (("off", "on") if compiles.get(name, resolved.type == "cpu") else ("off",))
    ]
    loaded = {}
    # int8 first: preparing it (export, calibration, compilation) slowed every network loaded before it in the same
    # process by 1.3 to 1.6x, eager or compiled, and none loaded after it. A server loads one network.
    for label, name, compile_mode in sorted(plan, key=lambda entry: entry[1] != "int8"):
        started = time.perf_counter()
        backbone, serves = _load(spec, device, name, compile_mode)
        backbone.warm_up()
        took = time.perf_counter() - started
        loaded[label] = (backbone, serves, took)
        print(f"  loaded {label} in {took:.0f} s; the server would serve {serves}", flush=True)
    return {label: loaded[label] for label, _, _ in plan}


def _load(spec, device: str, name: str, compile_mode: str) -> tuple[Backbone, str]:
    # A precision with one way to run is loaded once with no bar and judged by its probe cosine, which saves
    # compiling int8 twice; one with several ways is loaded as the server loads it, to find the way it serves.
    single = len(precision.variants(name, None, resolve_device(device), list)) == 1
    bar = 0.0 if single else precision.PROBE_MIN_COSINE
    backbone = Backbone(spec, device, name, probe_min_cosine=bar, compile_mode=compile_mode)
    backbone.load()
    serves = f"{name} ({backbone.selection.variant})"
    worst = backbone.selection.min_cosine
    if single and worst is not None and worst < precision.PROBE_MIN_COSINE:
        serves = "fp32: misses the probe bar"
    elif backbone.precision != name:
        serves = "fp32: misses the probe bar"
        backbone = Backbone(spec, device, name, probe_min_cosine=0.0, compile_mode=compile_mode)
        backbone.load()
    return backbone, serves


def forward_throughput(backbone: Backbone, pixels: np.ndarray, min_seconds: float) -> float:
    """Images per second of the forward pass alone, on pixels decoded beforehand: what precision changes."""
    backbone.run(pixels[:BATCH])
    done, started, cursor = 0, time.perf_counter(), 0
    while True:
        batch = np.take(pixels, range(cursor, cursor + BATCH), axis=0, mode="wrap")
        cursor += BATCH
        backbone.run(batch)
        done += BATCH
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds and done >= len(pixels):
            return done / elapsed


@dataclass
class Embedded:
    labelled: np.ndarray
    originals: np.ndarray
    copies: np.ndarray


def embed_set(backbone: Backbone, eval_set: EvalSet) -> Embedded:
    embed = backbone_embedder(backbone)
    return Embedded(
        embed([path for _, path in eval_set.labelled]),
        embed(eval_set.originals),
        embed([path for _, path in eval_set.copies]),
    )


def same_quality(eval_set: EvalSet, embedded: Embedded) -> Quality:
    scores = score_embeddings(eval_set, embedded.labelled, embedded.originals, embedded.copies)
    return Quality(scores.precision_at_5, scores.near_duplicate_recall_at_1)


def mixed_quality(eval_set: EvalSet, catalogue: Embedded, queries: Embedded) -> Quality:
    """Queries at one precision against a catalogue embedded at fp32, scored as `image-search eval` scores."""
    similarity = queries.labelled @ catalogue.labelled.T
    np.fill_diagonal(similarity, -np.inf)
    labels = eval_set.labels
    neighbours = ranked_neighbours(similarity, min(10, len(labels) - 1))
    _, p5, _, _ = retrieval_scores(labels, labels[neighbours])
    gallery = np.concatenate([catalogue.originals, catalogue.labelled])
    best = ranked_neighbours(queries.copies @ gallery.T, 1)[:, 0]
    recall = float((best == np.array([target for target, _ in eval_set.copies])).mean())
    return Quality(p5, recall)


def measure(
    device: str,
    images: list[bytes],
    eval_set: EvalSet,
    rounds: int,
    min_seconds: float,
    names: tuple[str, ...] | None,
) -> list[PrecisionResult]:
    loaded = load_all(device, names)
    fp32 = loaded["fp32"][0]
    reference = embed_set(fp32, eval_set)
    unseen = calibration_pixels(fp32.spec.preprocessing)
    reference_unseen = fp32.run(unseen).embeddings
    results = {}
    for name, (backbone, serves, took) in loaded.items():
        embedded = embed_set(backbone, eval_set)
        unseen_cosine = float((backbone.run(unseen).embeddings * reference_unseen).sum(axis=1).min())
        results[name] = PrecisionResult(
            name,
            serves,
            took,
            backbone.selection.min_cosine,
            None if name == "fp32" else unseen_cosine,
            same=same_quality(eval_set, embedded),
            mixed=mixed_quality(eval_set, reference, embedded),
        )
    limits, preprocessing = ImageLimits(), fp32.spec.preprocessing
    decoded = np.stack([load_pixels(data, limits, preprocessing) for data in images])
    for round_number in range(rounds):
        for name, (backbone, _, _) in loaded.items():
            forward = forward_throughput(backbone, decoded, min_seconds)
            rate = pipelined_throughput(backbone, images, BATCH, min_seconds)
            results[name].rates.append(rate)
            results[name].forward_rates.append(forward)
            print(
                f"  round {round_number + 1}: {name:<13} {rate:6.1f} images/s with decoding, {forward:6.1f} forward",
                flush=True,
            )
    for name, (backbone, _, _) in loaded.items():
        results[name].latencies_ms = single_image_latencies(backbone, images, 1)
    return list(results.values())


def rows(results: list[PrecisionResult]) -> list[Row]:
    fp32 = next(result for result in results if result.name == "fp32")
    out = []
    for result in results:
        best = max(result.rates)
        forward = max(result.forward_rates)
        notes = (
            f"x fp32 {best / max(fp32.rates):.2f}; forward only {forward:.1f}/s, x fp32 "
            f"{forward / max(fp32.forward_rates):.2f}; probe min cosine "
            + ("-" if result.probe_min_cosine is None else f"{result.probe_min_cosine:.4f}")
            + f"; serves {result.serves}; p@{K} {result.same.precision_at_k:.3f}"
            + f" (mixed {result.mixed.precision_at_k:.3f})"
            + f"; near-dup r@1 {result.same.near_duplicate_recall_at_1:.3f}"
            + f" (mixed {result.mixed.near_duplicate_recall_at_1:.3f}); rounds "
            + ", ".join(f"{rate:.1f}" for rate in result.rates)
        )
        row = Row("precision", f"in-process {result.name}, batch {BATCH}", best, result.latencies_ms, notes=notes)
        row.images_per_request = BATCH
        out.append(row)
    return out


def table(results: list[PrecisionResult]) -> str:
    fp32 = next(result for result in results if result.name == "fp32")
    base, forward_base = max(fp32.rates), max(fp32.forward_rates)
    header = (
        f"{'precision':<14} {'images/s':>9} {'x fp32':>7} {'forward/s':>9} {'x fp32':>7} {'1-img p50':>10} "
        f"{'probe cos':>10} {'photos cos':>10} "
        f"{'p@5':>6} {'dp@5':>7} {'r@1':>6} {'dr@1':>7} {'mixed dp@5':>10} {'mixed dr@1':>10}  serves"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        best = max(result.rates)
        cos = "-" if result.probe_min_cosine is None else f"{result.probe_min_cosine:.4f}"
        unseen = "-" if result.unseen_min_cosine is None else f"{result.unseen_min_cosine:.4f}"
        p50 = float(np.percentile(result.latencies_ms, 50))
        lines.append(
            f"{result.name:<14} {best:>9.1f} {best / base:>7.2f} {max(result.forward_rates):>9.1f} "
            f"{max(result.forward_rates) / forward_base:>7.2f} {p50:>8.1f}ms {cos:>10} {unseen:>10} "
            f"{result.same.precision_at_k:>6.3f} {result.same.precision_at_k - fp32.same.precision_at_k:>+7.3f} "
            f"{result.same.near_duplicate_recall_at_1:>6.3f} "
            f"{result.same.near_duplicate_recall_at_1 - fp32.same.near_duplicate_recall_at_1:>+7.3f} "
            f"{result.mixed.precision_at_k - fp32.same.precision_at_k:>+10.3f} "
            f"{result.mixed.near_duplicate_recall_at_1 - fp32.same.near_duplicate_recall_at_1:>+10.3f}  {result.serves}"
        )
    lines.append(
        "images/s: decode + preprocess + forward, pipelined (the limit); forward/s: on pixels decoded beforehand; "
        "best of the rounds.\ncos: worst cosine vs fp32 over the probe set, and over the sample catalogue's whole "
        "photos, which the probe never sees (int8 is calibrated on them);\nd: change from fp32; mixed: catalogue at "
        "fp32, queries at this precision."
    )
    return "\n".join(lines)
