"""The embedding network on its device: weights, precision, and one forward pass per batch.

Callers hand over uint8 HWC pixels; normalisation, layout and precision are this module's business so that the CPU and
CUDA paths give embeddings with the same meaning.
"""

import concurrent.futures
import logging
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from predictor.model_package import ModelSpec, build_network

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> torch.device:
    """`auto` picks CUDA when a GPU is visible; asking for `cuda` without one is a configuration error."""
    if requested not in DEVICE_CHOICES and not requested.startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)} or cuda:N, got {requested!r}")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {requested} was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(requested)


@dataclass(frozen=True)
class BatchOutput:
    embeddings: np.ndarray  # [N, D] float32, L2-normalised
    probabilities: np.ndarray | None  # [N, classes] float32, when asked for


class Backbone:
    """One network shared by every model the server exposes; `load()` is idempotent and thread-safe."""

    def __init__(self, spec: ModelSpec, device: str = "auto") -> None:
        self.spec = spec
        self.device = resolve_device(device)
        self.half = self.device.type == "cuda"
        self._network: nn.Module | None = None
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None
        self._load_lock = threading.Lock()
        # Every forward pass goes through this one thread: the device runs one batch at a time anyway, and CPU
        # inference already uses all cores through torch's own intra-op threads.
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="device")

    @property
    def loaded(self) -> bool:
        return self._network is not None

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    def load(self) -> None:
        with self._load_lock:
            if self._network is not None:
                return
            network = build_network(self.spec).eval().to(self.device)
            if self.half:
                network = network.half().to(memory_format=torch.channels_last)
            shape = (1, 3, 1, 1)
            dtype = torch.float16 if self.half else torch.float32
            self._mean = torch.tensor(self.spec.mean, dtype=dtype, device=self.device).view(shape) * 255.0
            self._std = torch.tensor(self.spec.std, dtype=dtype, device=self.device).view(shape) * 255.0
            self._network = network
            logger.info("loaded %s:%s on %s", self.spec.name, self.spec.version, self.device)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 8)) -> None:
        """Run the shapes we expect once, so the first real request pays no allocator or kernel-selection cost."""
        size = self.spec.preprocessing.crop_size
        for batch_size in batch_sizes:
            self.run(np.zeros((batch_size, size, size, 3), dtype=np.uint8), with_probabilities=True)

    def _to_input(self, pixels: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(pixels)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2)
        batch = batch.to(torch.float16 if self.half else torch.float32)
        batch = (batch - self._mean) / self._std
        return batch.contiguous(memory_format=torch.channels_last) if self.half else batch.contiguous()

    def run(self, pixels: np.ndarray, with_probabilities: bool = False) -> BatchOutput:
        """One forward pass over [N, H, W, 3] uint8 pixels; blocking, so call it from a worker thread."""
        if self._network is None:
            raise RuntimeError("Backbone.run() called before load()")
        with torch.inference_mode():
            features = self._network.features(self._to_input(pixels))
            embeddings = nn.functional.normalize(features.float(), dim=1)
            probabilities = None
            if with_probabilities:
                logits = self._network.classify(features)
                probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
            return BatchOutput(embeddings=embeddings.cpu().numpy(), probabilities=probabilities)
