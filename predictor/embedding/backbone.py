"""The embedding network on its device: weights, precision, and one forward pass per batch.

Callers hand over uint8 HWC pixels; normalisation, layout and precision are this module's business so that the CPU and
CUDA paths give embeddings with the same meaning.
"""

import atexit
import concurrent.futures
import ctypes
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from predictor.embedding import compilation, precision
from predictor.embedding.architectures.pooling import PooledNetwork
from predictor.embedding.clip_towers import TextEncoder
from predictor.embedding.compile_modes import COMPILE_CHOICES
from predictor.embedding.forward_process import ChildNetwork, ForwardProcess, ForwardProcessGone
from predictor.embedding.model_package import ModelSpec, build_network
from predictor.embedding.precision import Selection
from predictor.embedding.probe_images import calibration_pixels, probe_pixels
from predictor.embedding.projection import DeviceProjection
from predictor.observability.thread_names import name_os_thread

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")
# On a CPU a batch runs as consecutive slices, largest first (13 images: 12 + 1, or 4 + 4 + 4 + 1 with SLICES),
# each a size the network is compiled for. Under glibc's malloc, blocks over its 32 MiB heap limit are mapped afresh
# for every batch, and slices past 4 cost more per image (8: 1.3x and 32: 1.7x the CPU time of 4 on a Xeon with 2 MB
# of L2 per core; 16: 1.05x on 2 AMD EPYC cores). tcmalloc, which the image preloads, keeps freed pages whatever
# their size, and there larger slices keep both cores busier: images/s of the compiled fp32 Lite0 by batch, one slice
# against slices of 4, on 2 AMD EPYC cores: 8 x1.14, 12 x1.13, 16 x1.13; 13 as 12 + 1 only x1.02
# (docs/benchmarks.md). So the micro-batcher cuts a batch to one of the slices from WHOLE_SLICE_FROM when it can
# (batching.py).
SLICES = (4, 3, 2, 1)
SLICES_WITH_TCMALLOC = (16, 12, 8, 4, 3, 2, 1)
WHOLE_SLICE_FROM = 8
# The batches the probe, calibration and int8 (compiled for 1 to 4 images its own way) run.
CPU_SLICE = 4
# mallopt() options, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_allocator_tuned = False


def resolve_device(requested: str) -> torch.device:
    """`auto` picks CUDA when a GPU is visible; asking for `cuda` without one is a configuration error."""
    if requested not in DEVICE_CHOICES and not requested.startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)} or cuda:N, got {requested!r}")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {requested} was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(requested)


def keep_freed_memory() -> bool:
    """Make glibc keep freed activation memory for the next batch instead of returning it to the kernel.

    By default the activations of each forward pass are mapped afresh and faulted in page by page, which on a CPU
    took as much kernel time as the convolutions themselves. One arena, blocks up to 32 MiB from the heap and no
    trimming let the next batch reuse the pages. Process-wide and once; a no-op (False) where libc is not glibc.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30))
    _allocator_tuned = all(mallopt(option, value) == 1 for option, value in settings)
    return _allocator_tuned


def tcmalloc_loaded() -> bool:
    """Whether this process allocates with tcmalloc (the image preloads it; hack/with-tcmalloc.sh does here)."""
    try:
        return "tcmalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def slice_sizes(device: torch.device, precision_name: str) -> tuple[int, ...]:
    """The slices a batch runs as on `device`, largest first: one slice of any size on a GPU."""
    if device.type != "cpu":
        return ()
    return SLICES_WITH_TCMALLOC if precision_name != "int8" and tcmalloc_loaded() else SLICES


def sliced(count: int, sizes: tuple[int, ...]) -> list[slice]:
    """`count` images as consecutive slices of `sizes` (largest first, ending in 1), each the largest that fits."""
    if not sizes:
        return [slice(0, count)]
    parts, start = [], 0
    while start < count:
        size = next(size for size in sizes if size <= count - start)
        parts.append(slice(start, start + size))
        start += size
    return parts


_device_threads: dict[str, tuple[concurrent.futures.ThreadPoolExecutor, int]] = {}
_device_threads_lock = threading.Lock()


def device_thread(device: torch.device) -> tuple[concurrent.futures.ThreadPoolExecutor, int]:
    """The one thread of this process that runs every network's torch work on `device`, and its thread id.

    Loading, the probe, compiling and every forward pass run there: the device runs one batch at a time anyway, and
    CPU inference already uses all cores through torch's OpenMP threads. OpenMP gives each calling thread a team of
    its own; with a second team on the cores, libgomp stops its threads spinning between parallel regions, and every
    layer then waits for them to wake up. The forward pass ran 1.3 to 1.6x slower as soon as a second thread had run
    one, and stayed so.
    """
    with _device_threads_lock:
        if str(device) not in _device_threads:
            executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"device-{device}", initializer=name_os_thread
            )
            _device_threads[str(device)] = (executor, executor.submit(threading.get_ident).result())
        return _device_threads[str(device)]


class _ConvLeafTracer(torch.fx.Tracer):
    """Convolutions stay opaque: padding code inside them (TensorFlow "SAME") need not be traceable."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, nn.Conv2d) or super().is_leaf_module(module, qualified_name)


class _Features(nn.Module):
    def __init__(self, network: PooledNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.features(x)


def fold_batch_norms(network: PooledNetwork) -> int:
    """Fold each eval-mode BatchNorm2d that only ever sees one Conv2d's output into that convolution; returns how many.

    The network computes the same function with one fewer pass over every activation map. Pairs are found by tracing
    `features()`, so architectures need no annotations; a network that does not trace is left as it is.
    """
    wrapper = _Features(network)
    try:
        graph = _ConvLeafTracer().trace(wrapper)
    except Exception as error:  # noqa: BLE001 - folding is an optimisation; any tracing failure means "skip it"
        logger.info("batch norm folding skipped, features() does not trace: %s", error)
        return 0
    modules = dict(wrapper.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(modules[source.target], nn.Conv2d)
            and len(source.users) == 1
            and calls[str(source.target)] == 1
            and calls[str(node.target)] == 1
            and not modules[node.target].training
            and modules[node.target].track_running_stats
        ):
            pairs.append((str(source.target), str(node.target)))
    for conv_name, norm_name in pairs:
        fused = fuse_conv_bn_eval(modules[conv_name], modules[norm_name])
        _replace(wrapper, conv_name, fused)
        _replace(wrapper, norm_name, nn.Identity())
    return len(pairs)


def _replace(root: nn.Module, qualified_name: str, module: nn.Module) -> None:
    parent_name, _, name = qualified_name.rpartition(".")
    setattr(root.get_submodule(parent_name), name, module)


@dataclass(frozen=True)
class BatchOutput:
    embeddings: np.ndarray  # [N, D] float32, projected as the package says and L2-normalised
    probabilities: np.ndarray | None  # [N, classes] float32, when asked for


class Backbone:
    """One network shared by every model the server exposes; `load()` is idempotent and thread-safe."""

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "auto",
        precision_name: str | None = None,
        probe_min_cosine: float = precision.PROBE_MIN_COSINE,
        compile_mode: str = "off",
        compile_in_background: bool = False,
        forward_process: bool = False,
    ) -> None:
        """`precision_name` None keeps what a Backbone always ran, fp32 on a CPU and fp16 on CUDA, so that library
        callers (evaluation, projection fitting) stay reproducible; the command line's default is `auto`. So does
        `compile_mode`: library callers run the eager network unless they ask (`on`, or `auto`, which here means
        the same). `compile_in_background` (the server) serves the eager network at once and swaps the compiled one
        in when it is ready; otherwise `load()` compiles before it returns. `forward_process` (the server, on a CPU,
        for a package without a text tower) runs the image network in a child process once it has loaded there
        (forward_process.py), which then also does the compiling."""
        if compile_mode not in COMPILE_CHOICES:
            raise ValueError(f"--compile must be one of {', '.join(COMPILE_CHOICES)}, got {compile_mode!r}")
        self.spec = spec
        self.compile_mode = compile_mode
        self.compile_in_background = compile_in_background
        self.device = resolve_device(device)
        if precision_name is None:
            precision_name = "fp16" if self.device.type == "cuda" else "fp32"
        # Checked now, so a precision this machine or package cannot run is a start-up error; the probe comes at load.
        self.planned_precision = precision.choose_precision(precision_name, self.device, spec.precisions)
        self.requested_precision = precision_name
        self.probe_min_cosine = probe_min_cosine
        self.half = self.planned_precision == "fp16"
        self.dtype = torch.float16 if self.half else torch.float32
        self.selection: precision.Selection | None = None
        self.compilation = "not loaded"
        self._runner: precision.Runner | None = None
        self._network: PooledNetwork | None = None
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None
        self._projection: DeviceProjection | None = None
        self._load_lock = threading.Lock()
        self._process_to_start: ForwardProcess | None = None
        self.forward_process: ForwardProcess | None = None
        if forward_process and self.device.type == "cpu" and not spec.has_text_tower:
            self.forward_process = ForwardProcess(spec, precision_name, probe_min_cosine, compile_mode)
        self._child_serving = False
        self.slices: tuple[int, ...] = SLICES
        self._fallback_compile: list[compilation.Deferred] = []
        self.executor, self._device_thread = device_thread(self.device)
        self.text: TextEncoder | None = None
        if spec.has_text_tower:
            self.text = TextEncoder(spec, self.device, precision_name, probe_min_cosine, compile_mode, CPU_SLICE)
        # Which network each tower serves: "eager", or "compiled" once a compiled one is swapped in.
        self.serving: dict[str, str] = {"image": "eager", **({"text": "eager"} if self.text else {})}
        self.loaded_at: float | None = None
        self.compile_done = threading.Event()
        self._deferred: list[compilation.Deferred] = []
        self._watchers: list[Callable[[str, str], None]] = []
        self._watch_lock = threading.Lock()

    @property
    def whole_batches(self) -> tuple[int, ...]:
        """Batch sizes that run fastest per image, as one slice each: the larger slices; none on a GPU."""
        return tuple(size for size in self.slices if size >= WHOLE_SLICE_FROM)

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    @property
    def precision(self) -> str:
        """The precision the network runs at once loaded (the planned one before), as evaluations and the build-info
        metric record it."""
        if self._child_serving and self.forward_process is not None and self.forward_process.network is not None:
            return self.forward_process.network.precision
        return self._runner.name if self._runner is not None else self.planned_precision

    def _on_device_thread(self, function, *args):  # noqa: ANN001, ANN202 - a call forwarded as it is
        if threading.get_ident() == self._device_thread:
            return function(*args)
        return self.executor.submit(function, *args).result()

    def load(self) -> None:
        self._on_device_thread(self._load)

    def _load(self) -> None:
        with self._load_lock:
            if self._network is not None:
                return
            if self.device.type == "cpu":
                keep_freed_memory()
            text_tower = None
            network: PooledNetwork
            if self.spec.has_text_tower:
                from predictor.embedding.clip_towers import build_towers

                network, text_tower = build_towers(self.spec)
            else:
                network = build_network(self.spec).eval()
            # open_clip's towers have no batch norms to fold.
            folded = 0 if text_tower is not None else fold_batch_norms(network)
            # Channels-last on CPU too: oneDNN's depthwise and pointwise kernels are fastest on NHWC, and the uint8
            # pixels arrive in that layout, so the input needs no reordering copy.
            network = network.to(self.device, dtype=torch.float32).to(memory_format=torch.channels_last)
            shape = (1, 3, 1, 1)
            self._mean = (torch.tensor(self.spec.mean, dtype=torch.float32).view(shape) * 255.0).to(self.device)
            self._std = (torch.tensor(self.spec.std, dtype=torch.float32).view(shape) * 255.0).to(self.device)
            # Decoded once, and only when a reduced precision or a compiled network has to be probed.
            probe = functools.cache(lambda: self._input_batches(probe_pixels(self.spec.preprocessing)))
            self.selection = precision.select_runner(
                self.requested_precision,
                network,
                self.device,
                self.spec.precisions,
                probe=probe,
                calibration=lambda: self._input_batches(calibration_pixels(self.spec.preprocessing)),
                min_cosine=self.probe_min_cosine,
            )
            self.slices = slice_sizes(self.device, self.selection.runner.name)
            deferred: list[compilation.Deferred] = []
            if self.device.type == "cpu":
                compile_now = functools.partial(
                    compilation.compile_selection,
                    self.selection,
                    precision.fp32_runner(network),
                    probe=probe,
                    batch_sizes=tuple(sorted(self.slices)),
                    min_cosine=self.probe_min_cosine,
                    mode=self.compile_mode,
                )
                refused = compilation.why_not_compiled(self.selection, self.compile_mode)
                in_background = compilation.Deferred("image", self.selection, compile_now, self._swap_image)
                if self.forward_process is not None:
                    # The child compiles its own; this process compiles only if the child never serves or dies.
                    self.compilation = "eager until the forward process has loaded its network"
                    if refused is None and self.compile_in_background:
                        self._fallback_compile = [in_background]
                elif refused is None and self.compile_in_background:
                    self.compilation = "eager until the network compiled in the background passes its probe"
                    deferred.append(in_background)
                else:
                    self.selection, self.compilation = compile_now()
            else:
                self.compilation = "not compiled (CPU only)"
            self._runner = self.selection.runner
            if self.selection.compiled:
                self.serving["image"] = "compiled"
            self.half = self._runner.input_dtype == torch.float16
            self.dtype = self._runner.input_dtype
            projection = self.spec.projection.load() if self.spec.projection else None
            self._projection = DeviceProjection(projection, self.device)
            if text_tower is not None and self.text is not None:
                text_deferred = self.text.load(text_tower, self.compile_in_background, self._swapped)
                deferred.extend([text_deferred] if text_deferred else [])
                if self.text.selection is not None and self.text.selection.compiled:
                    self.serving["text"] = "compiled"
            self._network = network
            self._process_to_start = self.forward_process
            self.loaded_at = time.monotonic()
            logger.info(
                "loaded %s:%s on %s at %s (%s; %s; %d batch norms folded)",
                self.spec.name,
                self.spec.version,
                self.device,
                self._runner.name,
                self.selection.reason,
                self.compilation,
                folded,
            )
            self._deferred = deferred
            if not deferred and self.forward_process is None:
                self.compile_done.set()

    def start_background_compile(self) -> None:
        """Start compiling what load() left to compile in the background (a server calls it once its ports are open,
        so that the compile does not slow its start); returns at once, and does nothing when there is nothing to
        compile."""
        with self._load_lock:
            deferred, self._deferred = self._deferred, []
            process, self._process_to_start = self._process_to_start, None
        if process is not None:
            process.start(self._child_state, self._child_failed)
            atexit.register(process.close)
        if deferred:
            compilation.compile_in_background(deferred, self.executor, self.compile_done.set)

    def _child_state(self, network: ChildNetwork) -> None:
        """On the forward process's watcher thread: the child serves from the next batch on, then swaps its compiled
        network in, or has settled."""
        if not self._child_serving:
            self._child_serving = True
            logger.info("the forward process serves the image network from now on (%s)", network.note)
        self.compilation = f"in the forward process: {network.note}"
        if network.compiled and self.serving["image"] != "compiled":
            self._swapped("image", True, f"in the forward process at {network.precision}")
        if network.settled:
            self.compile_done.set()

    def _child_failed(self, reason: str) -> None:
        logger.error("%s; this process serves the network itself", reason)
        self.compilation = reason
        self._compile_here_instead()

    def _compile_here_instead(self) -> None:
        """The child never served, or died: this process compiles its own network in the background, as it would
        have without a child."""
        with self._load_lock:
            fallback, self._fallback_compile = self._fallback_compile, []
        if fallback:
            compilation.compile_in_background(fallback, self.executor, self.compile_done.set)
        else:
            self.compile_done.set()

    def _swap_image(self, selection: Selection, note: str) -> None:
        """On the device thread, between batches: the compiled network serves from the next batch on."""
        self.compilation = note
        if selection.compiled:
            self.selection, self._runner = selection, selection.runner
        self._swapped("image", selection.compiled, note)

    def _swapped(self, tower: str, compiled: bool, note: str) -> None:
        since = time.monotonic() - (self.loaded_at or time.monotonic())
        if compiled:
            logger.info("serving the compiled %s network from now on, %.1f s after load (%s)", tower, since, note)
        else:
            logger.warning("the %s network stays eager: %s", tower, note)
        network = "compiled" if compiled else "eager"
        with self._watch_lock:
            if self.serving.get(tower) == network:
                return  # a failed compile leaves the eager network serving: nothing swapped
            self.serving[tower] = network
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher(tower, network)

    def watch_serving(self, watcher: Callable[[str, str], None]) -> None:
        """Call `watcher(tower, "eager" | "compiled")` now for each tower, and again whenever a tower swaps."""
        with self._watch_lock:
            self._watchers.append(watcher)
            serving = dict(self.serving)
        for tower, network in serving.items():
            watcher(tower, network)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 8)) -> None:
        """Run the shapes we expect once, so the first real request pays no allocator or kernel-selection cost."""
        size = self.spec.preprocessing.input_size
        for batch_size in batch_sizes:
            self.run(np.zeros((batch_size, size, size, 3), dtype=np.uint8), with_probabilities=True)
            if self.text is not None:
                self.embed_text(self.text.tokenize(["a photo"] * batch_size))

    def embed_text(self, tokens: torch.Tensor) -> np.ndarray:
        """[N, D] L2-normalised embeddings of token ids (`self.text.tokenize`), on the device thread; blocking."""
        if self.text is None:
            raise RuntimeError(f"{self.spec.identity} has no text tower")
        return self._on_device_thread(self.text.run, tokens)

    def _to_input(self, pixels: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        """uint8 NHWC pixels to the normalised channels-last batch the network takes, on the device."""
        dtype = dtype or self.dtype
        batch = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device.type == "cuda":
            # Pinned pages let the copy run asynchronously; the first kernel that reads the batch waits for it.
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        # NHWC memory viewed as NCHW is channels-last already; the dtype conversion keeps that layout.
        batch = batch.permute(0, 3, 1, 2).to(dtype)
        if self._mean is None or self._std is None:
            raise RuntimeError("Backbone input made before load()")
        return batch.sub_(self._mean.to(dtype)).div_(self._std.to(dtype))

    def _input_batches(self, pixels: np.ndarray) -> list[torch.Tensor]:
        """float32 network input in slices of CPU_SLICE, the size the CPU runs (and int8 is compiled for) most."""
        return [self._to_input(pixels[i : i + CPU_SLICE], torch.float32) for i in range(0, len(pixels), CPU_SLICE)]

    def run(self, pixels: np.ndarray, with_probabilities: bool = False) -> BatchOutput:
        """Embed [N, H, W, 3] uint8 pixels on the device thread; blocking. Callers on an event loop run it in
        `executor`, which saves the hand-over."""
        return self._on_device_thread(self._run, pixels, with_probabilities)

    def _run(self, pixels: np.ndarray, with_probabilities: bool) -> BatchOutput:
        if self._network is None:
            raise RuntimeError("Backbone.run() called before load()")
        if self._child_serving and self.forward_process is not None:
            try:
                return _joined(self.forward_process.run(pixels, with_probabilities))
            except ForwardProcessGone as gone:
                self._child_serving = False
                logger.error("%s; this process serves the network itself from now on", gone)
                if self.serving["image"] == "compiled":
                    self._swapped("image", False, str(gone))
                self._compile_here_instead()
        return _joined([self._forward(pixels[part], with_probabilities) for part in sliced(len(pixels), self.slices)])

    def _forward(self, pixels: np.ndarray, with_probabilities: bool) -> BatchOutput:
        runner, projection = self._runner, self._projection
        if runner is None or projection is None:
            raise RuntimeError("Backbone.run() called before load()")
        with torch.inference_mode():
            features, logits = runner.embed(self._to_input(pixels), with_probabilities)
            embeddings = projection(features)
            probabilities = None
            if with_probabilities and logits is not None:  # a network without a classifier head has no logits
                probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
            return BatchOutput(embeddings=embeddings.cpu().numpy(), probabilities=probabilities)


def _joined(parts: list[BatchOutput]) -> BatchOutput:
    if len(parts) == 1:
        return parts[0]
    probabilities = [part.probabilities for part in parts if part.probabilities is not None]
    return BatchOutput(
        embeddings=np.concatenate([part.embeddings for part in parts]),
        probabilities=np.concatenate(probabilities) if probabilities else None,
    )
