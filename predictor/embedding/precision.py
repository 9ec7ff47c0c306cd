"""Which numeric precision the network runs at, and the load-time proof that it still means what fp32 means.

`auto` takes the fastest precision that the hardware runs natively and the model package allows. Whatever was chosen
must then embed a fixed probe set of real photos with cosine similarity >= PROBE_MIN_COSINE to the fp32 embeddings
of the same pixels, or the server falls back to fp32 and logs why. Vectors that pass stay comparable with vectors
another precision wrote, which is why precision is not part of the model identity (docs/benchmarks.md measures it).
"""

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from predictor.embedding.architectures.pooling import PooledNetwork

logger = logging.getLogger(__name__)

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16", "int8")
# Fastest first, per device type; `auto` takes the first that is native and allowed.
SPEED_ORDER = {"cpu": ("int8", "bf16", "fp32"), "cuda": ("fp16", "bf16", "fp32")}
PROBE_MIN_COSINE = 0.995
# /proc/cpuinfo flags (x86 "flags", Arm "Features") that mean the CPU computes in these formats natively.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
CPU_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


class PrecisionUnavailable(ValueError):
    """The asked-for precision cannot run here or is not allowed by the model package; the message says what to do."""


@cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU listed; empty where /proc/cpuinfo does not exist."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _cuda_bf16() -> bool:
    try:
        return torch.cuda.is_bf16_supported()
    except (RuntimeError, AssertionError):  # no driver: the caller learns of it when it uses the device
        return False


def native_precisions(device: torch.device, flags: frozenset[str] | None = None) -> tuple[str, ...]:
    """Precisions this device computes natively, fastest first."""
    if device.type == "cuda":
        found = {"fp16", "fp32"} | ({"bf16"} if _cuda_bf16() else set())
    else:
        flags = cpu_flags() if flags is None else flags
        found = {"fp32"}
        if flags & CPU_BF16_FLAGS and torch.backends.mkldnn.is_available():
            found.add("bf16")
        if flags & CPU_INT8_FLAGS and "x86" in torch.backends.quantized.supported_engines:
            found.add("int8")
    return tuple(name for name in SPEED_ORDER.get(device.type, ("fp32",)) if name in found)


def choose_precision(
    requested: str, device: torch.device, allowed: tuple[str, ...], native: tuple[str, ...] | None = None
) -> str:
    """The precision to try at load: `auto` resolved, or the requested one if it can run here and is allowed."""
    if requested not in PRECISION_CHOICES:
        raise PrecisionUnavailable(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {requested!r}")
    native = native_precisions(device) if native is None else native
    if requested == "auto":
        return next((name for name in native if name in allowed), "fp32")
    if requested != "fp32" and requested not in native:
        where = "a CUDA GPU" if device.type == "cuda" else "this CPU (see its /proc/cpuinfo flags)"
        raise PrecisionUnavailable(
            f"--precision {requested} does not run natively on {where}; it runs {', '.join(native)}. "
            "Use --precision auto to take the fastest of them."
        )
    if requested not in allowed:
        raise PrecisionUnavailable(
            f"--precision {requested}: the model package allows only {', '.join(allowed)} (model.json 'precisions')"
        )
    return requested


Embed = Callable[[torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class Runner:
    """The network at one precision. `embed(x, with_logits)` is the network's own `embed()` contract: pooled features
    and, when asked, class logits, from the normalised input batch (float32; float16 for fp16)."""

    name: str
    input_dtype: torch.dtype
    embed: Embed
    # What compilation needs (compilation.py): the network whose feature_map() this runner runs, and the
    # autocast dtype it runs that under (None: at the network's own dtype). No network: not compiled that way (fp16,
    # int8, which compiles itself, or a runner compiled already).
    network: PooledNetwork | None = None
    autocast_dtype: torch.dtype | None = None


def fp32_runner(network: PooledNetwork) -> Runner:
    return Runner("fp32", torch.float32, lambda x, with_logits: network.embed(x, with_logits=with_logits), network)


# Autocast's cache of cast weights is one process-wide table behind a mutex. Leaving an autocast block empties it, and
# freeing a cached weight there takes the GIL, while a compile on another thread that traces the same network under
# autocast holds the GIL and waits for that mutex: the forward pass and the background compile deadlocked, and a bf16
# server never answered again. Without the cache each forward pass casts the weights it uses again (no other change).
AUTOCAST_CACHE = False


def _outside_autocast(forward: Callable[[torch.Tensor], torch.Tensor], device_type: str):
    def exact(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, enabled=False):
            return forward(x.float())

    return exact


def grouped_convolutions(network: nn.Module) -> list[nn.Conv2d]:
    return [module for module in network.modules() if isinstance(module, nn.Conv2d) and module.groups > 1]


def first_grouped_convolution(network: nn.Module) -> list[nn.Conv2d]:
    return grouped_convolutions(network)[:1]


def bf16_runner(
    network: PooledNetwork,
    device: torch.device,
    kept_in_fp32: Callable[[nn.Module], Sequence[nn.Module]] | None = None,
) -> Runner:
    """Autocast rather than bf16 weights: convolutions and matmuls run in bf16 while the weights stay fp32 (the probe
    and the fall-back need the fp32 network), and the ops autocast keeps at fp32 stay exact. Whatever else an
    architecture computes runs at its input's precision, and the probe judges the result.

    `kept_in_fp32` picks modules of the network that stay out of bf16. Each output of a depthwise (grouped)
    convolution sums only 9 or 25 products of one channel, so bf16 rounding of its input is not averaged away. On
    EfficientNet-Lite0 the first one alone, on the stem's output at the highest resolution, decides the probe: in
    fp32 it takes the worst cosine from 0.989 to 0.998, as keeping all 16 in fp32 does, and the eager forward pass
    runs 1.54x fp32 instead of 1.07x.
    """
    if kept_in_fp32 is not None:
        network = copy.deepcopy(network)
        for module in kept_in_fp32(network):
            module.forward = _outside_autocast(module.forward, device.type)

    def embed(x: torch.Tensor, with_logits: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=AUTOCAST_CACHE):
            features, logits = network.embed(x, with_logits=with_logits)
        return features.float(), None if logits is None else logits.float()

    return Runner("bf16", torch.float32, embed, network, torch.bfloat16)


def fp16_runner(network: PooledNetwork) -> Runner:
    half = copy.deepcopy(network).half()
    return Runner("fp16", torch.float16, lambda x, with_logits: half.embed(x, with_logits=with_logits))


def int8_runner(network: PooledNetwork, calibration: list[torch.Tensor]) -> Runner:
    from predictor.embedding.quantization import int8_embed

    return Runner("int8", torch.float32, int8_embed(network, calibration))


Variant = tuple[str, Callable[[], Runner]]


def variants(
    name: str, network: PooledNetwork, device: torch.device, calibration: Callable[[], list[torch.Tensor]]
) -> list[Variant]:
    """The ways to run `name`, fastest first; the first that passes the probe is served.

    `network` is the loaded fp32 network and is left as it is, so a failed probe can fall back to it.
    """
    if name == "fp32":
        return [("fp32", lambda: fp32_runner(network))]
    if name == "bf16":
        return [
            ("bf16", lambda: bf16_runner(network, device)),
            (
                "bf16 with the first grouped convolution in fp32",
                lambda: bf16_runner(network, device, first_grouped_convolution),
            ),
            ("bf16 with grouped convolutions in fp32", lambda: bf16_runner(network, device, grouped_convolutions)),
        ]
    if name == "fp16":
        return [("fp16", lambda: fp16_runner(network))]
    if name == "int8":
        # Leaving the depthwise convolutions in fp32 did not help int8 as it helps bf16 (probe worst 0.946 against
        # 0.955 with everything quantized), so int8 has one variant.
        return [("int8", lambda: int8_runner(network, calibration()))]
    raise PrecisionUnavailable(f"unknown precision {name!r}")


def probe_cosines(reference: Runner, candidate: Runner, batches: list[torch.Tensor]) -> np.ndarray:
    """Cosine similarity between the two runners' embeddings of each probe image."""
    cosines = []
    with torch.inference_mode():
        for batch in batches:
            # As the server hands them over: a compiled network would compile again for a tensor made outside
            # inference mode.
            batch = batch.clone()
            expected = nn.functional.normalize(reference.embed(batch, False)[0].float(), dim=1)
            got = nn.functional.normalize(candidate.embed(batch.to(candidate.input_dtype), False)[0].float(), dim=1)
            cosines.append((expected * got).sum(dim=1).cpu().numpy())
    return np.concatenate(cosines)


@dataclass(frozen=True)
class Selection:
    runner: Runner
    requested: str
    tried: str
    variant: str  # how the served precision runs, e.g. "bf16 with grouped convolutions in fp32"
    min_cosine: float | None  # of the served variant on the probe set; None for fp32, which needs no probe
    reason: str
    compiled: bool = False  # the feature map is an Inductor graph (predictor/embedding/compilation.py)


def select_runner(
    requested: str,
    network: PooledNetwork,
    device: torch.device,
    allowed: tuple[str, ...],
    probe: Callable[[], list[torch.Tensor]],
    calibration: Callable[[], list[torch.Tensor]],
    min_cosine: float = PROBE_MIN_COSINE,
    variants_of: Callable[..., list[Variant]] = variants,
) -> Selection:
    """Build the chosen precision's runner, probe it against fp32, and keep it only if it passes. `variants_of` gives
    the ways to run a network whose input is not an image batch (a CLIP text tower's, clip_towers.py)."""
    tried = choose_precision(requested, device, allowed)
    reference = variants_of("fp32", network, device, calibration)[0][1]()
    if tried == "fp32":
        reason = "asked for" if requested == "fp32" else "the fastest this hardware and package allow"
        return Selection(reference, requested, tried, "fp32", None, reason)
    batches = probe()
    failures = []
    for label, build in variants_of(tried, network, device, calibration):
        try:
            candidate = build()
            worst = float(probe_cosines(reference, candidate, batches).min())
        except Exception as error:  # noqa: BLE001 - any failure to build or run a reduced precision means "use fp32"
            failures.append(f"{label} could not be prepared ({type(error).__name__}: {error})")
            continue
        if worst >= min_cosine:
            # Names the way that passed, so a log that also lists a failed way is not read as a contradiction.
            reason = f"{label}: probe cosine vs fp32 >= {worst:.4f} (bar {min_cosine})" + (
                f"; tried first: {'; '.join(failures)}" if failures else ""
            )
            return Selection(candidate, requested, tried, label, worst, reason)
        failures.append(f"{label} embeds the probe images with cosine down to {worst:.4f} against fp32")
        logger.info("precision: %s, below %s", failures[-1], min_cosine)
    reason = f"{'; '.join(failures)}; below {min_cosine}, so serving fp32"
    logger.warning("precision: %s", reason)
    return Selection(reference, requested, tried, "fp32", None, reason)
