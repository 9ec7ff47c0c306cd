"""Compiling the network for the CPU with Inductor, at load, for every batch size the server runs.

Eager PyTorch runs each layer as its own kernel, with a cast around every bf16 convolution and a separate pass for
each activation. The compiled graph fuses them and runs oneDNN kernels on weights packed once (freezing). On
EfficientNet-Lite0 at 288 px, on two Sapphire Rapids cores, the forward pass ran 1.36x eager fp32 compiled at fp32
and 2.7x compiled at bf16 (docs/benchmarks.md). A compiled network must pass the same probe against eager fp32 as
any precision does; whatever fails (no C++ compiler, a graph Inductor cannot compile, the probe) leaves the eager
network serving, and the log says why.

Only the feature map is compiled: pooling and the classifier head are cheap and stay the architecture's own, in fp32.
CUDA is not compiled; that path keeps its eager fp16.
"""

import copy
import logging
import os
import shutil
import sysconfig
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from predictor.embedding.precision import Runner, Selection, probe_cosines

logger = logging.getLogger(__name__)

# Compiling takes 10 to 20 s on two cores and then saves about 3 ms of forward pass per image at bf16, so a batch
# command pays it back from a few thousand images; a server always does.
WORTH_COMPILING_IMAGES = 5_000

# Graphs one compiled function may hold: batch sizes 1 to 4 for each of the networks a process compiles (a server one,
# a benchmark comparing precisions a few).
RECOMPILE_LIMIT = 64


def for_batch_job(mode: str, images: int) -> str:
    """What `--compile auto` means for a command that embeds `images` images and exits."""
    if mode != "auto":
        return mode
    if images < WORTH_COMPILING_IMAGES:
        logger.info(
            "compilation off: %d images do not pay for it (auto compiles from %d)", images, WORTH_COMPILING_IMAGES
        )
        return "off"
    return "on"


def missing_compiler() -> str | None:
    """Why Inductor could not build CPU kernels here, or None. It compiles C++ with $CXX, else g++, against Python.h."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH; install g++ or set CXX)"
    headers = Path(sysconfig.get_paths()["include"])
    if not (headers / "Python.h").exists():
        return f"no Python headers ({headers / 'Python.h'} is missing; install the python3-dev package)"
    return None


def compiled_runner(runner: Runner, example: torch.Tensor, batch_sizes: tuple[int, ...]) -> Runner:
    """`runner` with its feature map compiled for each of `batch_sizes` now, so that no request waits for it.

    A batch of another size runs the eager network instead of compiling while a request waits.
    """
    import torch._inductor.config as inductor_config

    network, dtype = runner.network, runner.autocast_dtype
    if network is None:
        raise ValueError(f"the {runner.name} runner has no network of its own to compile")

    def feature_map(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return network.feature_map(x)

    graph = torch.compile(feature_map, dynamic=False)
    # Freezing turns the weights into constants, which lets Inductor fold and pre-pack them for oneDNN. Every network
    # compiled in this process adds its graphs to the cache of this one function, hence the higher limit.
    with (
        torch.inference_mode(),
        inductor_config.patch(freezing=True),
        torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT),
    ):
        # Images run channels-last; token ids (a CLIP text tower's input) have no channels.
        layout = torch.channels_last if example.dim() == 4 else torch.contiguous_format
        for size in batch_sizes:
            # A clone made here is an inference tensor in the layout of every batch the server runs.
            graph(example[:1].expand(size, *example.shape[1:]).clone(memory_format=layout))

    def compiled_feature_map(x: torch.Tensor) -> torch.Tensor:
        with torch.compiler.set_stance("eager_on_recompile"):
            return graph(x).float()

    # A shallow copy shares every module; only its feature_map is the compiled graph.
    compiled = copy.copy(network)
    setattr(compiled, "feature_map", compiled_feature_map)  # noqa: B010 - over the method, on this copy
    return Runner(runner.name, runner.input_dtype, lambda x, with_logits: compiled.embed(x, with_logits=with_logits))


def compile_selection(
    selection: Selection,
    reference: Runner,
    probe: Callable[[], list[torch.Tensor]],
    batch_sizes: tuple[int, ...],
    min_cosine: float,
    mode: str = "auto",
) -> tuple[Selection, str]:
    """The selection with its runner compiled when that is possible and passes the probe; and what happened, for the
    load log."""
    if mode == "off":
        return selection, "not compiled (compilation off)"
    if selection.runner.network is None:
        return selection, f"not compiled ({selection.runner.name} is compiled its own way or not on this device)"
    missing = missing_compiler()
    if missing:
        logger.warning("compilation: %s; serving the eager network", missing)
        return selection, f"not compiled: {missing}"
    batches = probe()
    started = time.perf_counter()
    try:
        candidate = compiled_runner(selection.runner, batches[0], batch_sizes)
        worst = float(probe_cosines(reference, candidate, batches).min())
    except Exception as error:  # noqa: BLE001 - compilation is an optimisation; any failure means "serve eager"
        logger.warning("compilation failed, serving the eager network: %s: %s", type(error).__name__, error)
        return selection, f"not compiled: {type(error).__name__}"
    took = time.perf_counter() - started
    if worst < min_cosine:
        reason = f"compiled network embeds the probe images with cosine down to {worst:.4f}, below {min_cosine}"
        logger.warning("compilation: %s; serving the eager network", reason)
        return selection, f"not compiled: {reason}"
    note = f"compiled for batch sizes {', '.join(map(str, sorted(batch_sizes)))} in {took:.1f} s, probe {worst:.4f}"
    compiled = replace(selection, runner=candidate, variant=f"{selection.variant}, compiled", compiled=True)
    if selection.min_cosine is not None:
        compiled = replace(compiled, min_cosine=min(worst, selection.min_cosine))
    return compiled, note
