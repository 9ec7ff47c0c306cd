"""Compiling the network for the CPU with Inductor, at load, for every batch size the server runs.

Eager PyTorch runs each layer as its own kernel, with a cast around every bf16 convolution and a separate pass for
each activation. The compiled graph fuses them and runs oneDNN kernels on weights packed once (freezing). On
EfficientNet-Lite0 at 288 px, on two Sapphire Rapids cores, the forward pass ran 1.36x eager fp32 compiled at fp32
and 2.7x compiled at bf16 (docs/benchmarks.md). A compiled network must pass the same probe against eager fp32 as
any precision does; whatever fails (no C++ compiler, a graph Inductor cannot compile, the probe) leaves the eager
network serving, and the log says why.

Only the feature map is compiled: pooling and the classifier head are cheap and stay the architecture's own, in fp32.
CUDA is not compiled; that path keeps its eager fp16.

A server does not wait for it (`compile_in_background`): it serves the eager network from the moment it has loaded,
compiles on a thread of lower priority, and swaps the compiled network in between two batches once it has passed the
probe. A batch command compiles before its first batch, since it has nobody to answer meanwhile.
"""

import concurrent.futures
import copy
import hashlib
import logging
import os
import platform
import shutil
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from predictor.embedding.precision import AUTOCAST_CACHE, Runner, Selection, probe_cosines
from predictor.observability.thread_names import name_os_thread

logger = logging.getLogger(__name__)

# Compiling takes 10 to 20 s on two cores and then saves about 3 ms of forward pass per image at bf16, so a batch
# command pays it back from a few thousand images; a server always does.
WORTH_COMPILING_IMAGES = 5_000

# Graphs one compiled function may hold: one per slice size (backbone.py, up to 7) for each of the networks a process
# compiles (a server one, a benchmark comparing precisions a few).
RECOMPILE_LIMIT = 64
# The configured cache folder, remembered before TORCHINDUCTOR_CACHE_DIR is pointed at this CPU's own under it.
CACHE_BASE_VARIABLE = "IMAGE_SEARCH_INDUCTOR_CACHE_BASE"
# How much lower than the server's the compiling thread's priority is (nice), and so the C++ compilers it starts:
# requests get the larger share of the cores while the compile goes on. At 10 a fully loaded server left the compile
# a tenth of a core, and it took minutes to reach the speed it was needed for.
BACKGROUND_NICENESS = 5


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


def cpu_identity() -> str:
    """What Inductor's kernels for this machine depend on: the CPU model and its instruction set flags, and torch.

    Inductor compiles with -march=native, yet keys its cache on the source and the command line alone, which are the
    same on every CPU: a kernel cached on an AVX-512 machine would be loaded, and crash, on one without it.
    """
    described = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    fields = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    wanted = [line for line in lines if line.split(":", 1)[0].strip() in fields]
    first = sorted(set(wanted))  # every core of one machine says the same
    return "\n".join([described, torch.__version__, *first])


def use_a_cache_of_this_cpus_own() -> Path:
    """Point Inductor's cache at a folder of its own for this CPU under the one configured, and return it.

    The server's cache lies in an emptyDir: it outlives a restart of the container, which then compiles from cache,
    but a pod moved to another node starts one of its own. The probe runs on whatever the cache gave all the same.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    base = Path(os.environ.get(CACHE_BASE_VARIABLE) or os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir())
    os.environ.setdefault(CACHE_BASE_VARIABLE, str(base))
    folder = base / f"cpu-{hashlib.sha256(cpu_identity().encode()).hexdigest()[:16]}"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return folder


def compiled_runner(runner: Runner, example: torch.Tensor, batch_sizes: tuple[int, ...]) -> Runner:
    """`runner` with its feature map compiled for each of `batch_sizes` now, so that no request waits for it.

    A batch of another size runs the eager network instead of compiling while a request waits.
    """
    import torch._inductor.config as inductor_config

    use_a_cache_of_this_cpus_own()
    network, dtype = runner.network, runner.autocast_dtype
    if network is None:
        raise ValueError(f"the {runner.name} runner has no network of its own to compile")

    def feature_map(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            x.device.type,
            dtype=dtype or torch.bfloat16,
            enabled=dtype is not None,
            cache_enabled=AUTOCAST_CACHE,
        ):
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
            started = time.perf_counter()
            # A clone made here is an inference tensor in the layout of every batch the server runs.
            graph(example[:1].expand(size, *example.shape[1:]).clone(memory_format=layout))
            logger.info("compiled batch size %d in %.1f s", size, time.perf_counter() - started)

    def compiled_feature_map(x: torch.Tensor) -> torch.Tensor:
        with torch.compiler.set_stance("eager_on_recompile"):
            return graph(x).float()

    # A shallow copy shares every module; only its feature_map is the compiled graph.
    compiled = copy.copy(network)
    setattr(compiled, "feature_map", compiled_feature_map)  # noqa: B010 - over the method, on this copy
    return Runner(runner.name, runner.input_dtype, lambda x, with_logits: compiled.embed(x, with_logits=with_logits))


def why_not_compiled(selection: Selection, mode: str) -> str | None:
    """The load log's reason why `selection` will not be compiled here, or None when it will be tried."""
    if mode == "off":
        return "not compiled (compilation off)"
    if selection.runner.network is None:
        return f"not compiled ({selection.runner.name} is compiled its own way or not on this device)"
    missing = missing_compiler()
    if missing:
        logger.warning("compilation: %s; serving the eager network", missing)
        return f"not compiled: {missing}"
    return None


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
    refused = why_not_compiled(selection, mode)
    if refused:
        return selection, refused
    batches = probe()
    started = time.perf_counter()
    try:
        candidate = compiled_runner(selection.runner, batches[0], batch_sizes)
        worst = float(probe_cosines(reference, candidate, batches).min())
    except Exception as error:  # noqa: BLE001 - compilation is an optimisation; any failure means "serve eager"
        logger.warning("compilation failed, serving the eager network: %s: %s", type(error).__name__, error)
        return selection, f"not compiled: {type(error).__name__}: {error}"[:300]
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


@dataclass(frozen=True)
class Deferred:
    """A network that serves eager while it is compiled in the background.

    `compile` runs on the compiling thread and returns compile_selection's answer; `swap` runs on the device thread,
    between two batches, and takes it whatever it is (a compiled selection, or the eager one with the reason)."""

    tower: str
    eager: Selection
    compile: Callable[[], tuple[Selection, str]]
    swap: Callable[[Selection, str], None]


def compile_in_background(
    deferred: list[Deferred], device_executor: concurrent.futures.Executor, done: Callable[[], None]
) -> threading.Thread:
    """Compile each network on a new thread of lower priority, hand each result to the device thread, then `done()`.

    It returns at once: Inductor's import (seconds) runs on the new thread too, so a server that starts it while its
    ports open is not made later by it. The thread ends when it is done: the OpenMP threads that its compile and probe
    runs started end with it, so the device thread's own team is again the only one on the cores (see
    backbone.device_thread).
    """

    def work() -> None:
        name_os_thread()
        _lower_this_threads_priority()
        try:
            from torch._inductor.loop_body import InterpreterShim

            unsafe = device_executor.submit(_trace_fxs_placeholder_now, InterpreterShim).result()
            for job in deferred:
                selection, note = (job.eager, unsafe) if unsafe else job.compile()
                device_executor.submit(job.swap, selection, note).result()
        except Exception:  # noqa: BLE001 - a failure here must leave the eager network serving, never stop the server
            logger.exception("background compilation failed; the eager network keeps serving")
        finally:
            done()

    thread = threading.Thread(target=work, name="compile-network", daemon=True)
    thread.start()
    return thread


def _trace_fxs_placeholder_now(shim: type) -> str | None:
    """Inductor's lowering traces one placeholder function with torch.fx.symbolic_trace, once per process. Like every
    symbolic trace, it patches `torch.nn.Module.__call__` for the whole process while it runs, and an eager forward
    pass on another thread at that moment fails ("module is not installed as a submodule"). Traced on the device
    thread, between two batches, it is cached before the compile starts; the compile's other traces (make_fx) leave
    modules that they do not trace working."""
    placeholder = getattr(shim, "_dummy_gm", None)
    if placeholder is None:
        return "not compiled: this torch's Inductor has no InterpreterShim._dummy_gm to trace before serving"
    placeholder()
    return None


def _lower_this_threads_priority() -> None:
    # On Linux a nice value belongs to a thread, and a process it starts (Inductor's g++) inherits it.
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, current + BACKGROUND_NICENESS))
    except OSError as error:
        logger.info("compiling at the server's own priority: %s", error)
