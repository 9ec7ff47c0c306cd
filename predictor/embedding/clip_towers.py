"""The two towers of a CLIP package on the device.

The image tower takes the contract every architecture has (`feature_map`, `embed`), so the Backbone runs it as any
image network: the same precision choice, probe, compilation and batching. The text tower gets the same treatment
here, with a probe of its own: a fixed set of captions whose embeddings at the chosen precision (and compiled) must
match fp32 with cosine >= the same bar, or that tower alone falls back.

Both return open_clip's features unchanged (`encode_image`, `encode_text`); the Backbone L2-normalises them, as
open_clip's `normalize=True` does, so words and pictures stay in one space.
"""

import copy
import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from predictor.embedding import compilation, precision
from predictor.embedding.architectures.pooling import PooledNetwork
from predictor.embedding.clip_package import build_clip_model, build_tokenizer
from predictor.embedding.model_package import ModelSpec

logger = logging.getLogger(__name__)

# Captions the text tower's precision and compilation are probed on: short and long, plain and odd, one past the
# context length, so that every token position and the end-of-text pooling are exercised.
PROBE_TEXTS = (
    "a photo of a cat",
    "a photo of a dog",
    "a photo of a red bicycle",
    "an astronaut in a white suit",
    "a cup of coffee on a wooden table",
    "a close-up photo of a rocket",
    "a black and white photo of a camera man",
    "a horse standing in a field",
    "two people walking on a beach at sunset",
    "a bowl of fruit",
    "a brick wall",
    "the text 'open sesame' written on a sign",
    "a diagram",
    "moon",
    "a blurry picture of something green",
    "Le chat est sur la table.",
    "東京の夜景",
    "3.14159 and 2.71828",
    "a painting of a ship on a stormy sea, oil on canvas, nineteenth century, in a gilded frame",
    "a very long caption " + "that keeps going and going " * 20,
)


class ImageTower(PooledNetwork):
    """open_clip's image tower as an architecture: `encode_image` before normalisation. It pools by itself and has
    no classifier head."""

    visual: Any

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.pool = nn.Identity()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def embed(self, x: torch.Tensor, with_logits: bool = False) -> tuple[torch.Tensor, None]:
        return self.feature_map(x), None


class TextTower(PooledNetwork):
    """open_clip's text tower: token ids [N, context_length] -> `encode_text` before normalisation."""

    model: Any

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.pool = nn.Identity()

    def feature_map(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def embed(self, tokens: torch.Tensor, with_logits: bool = False) -> tuple[torch.Tensor, None]:
        return self.feature_map(tokens), None


def build_towers(spec: ModelSpec) -> tuple[ImageTower, TextTower]:
    """Both towers of one open_clip model, sharing its weights."""
    if spec.clip is None:
        raise ValueError(f"{spec.identity} is not an open_clip package")
    model = build_clip_model(spec.clip)
    return ImageTower(model.visual).eval(), TextTower(model).eval()


def _tower_embed(tower: PooledNetwork) -> precision.Embed:
    return lambda tokens, with_logits: tower.embed(tokens, with_logits)


def text_variants(
    name: str, tower: PooledNetwork, device: torch.device, calibration: Callable[[], list[torch.Tensor]]
) -> list[precision.Variant]:
    """The text tower at `name`, as precision.variants gives the image network: its input stays token ids."""
    tokens = torch.long
    if name == "fp32":
        return [("fp32", lambda: precision.Runner("fp32", tokens, _tower_embed(tower), tower))]
    if name == "bf16":

        def bf16() -> precision.Runner:
            def embed(x: torch.Tensor, with_logits: bool) -> tuple[torch.Tensor, None]:
                with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=precision.AUTOCAST_CACHE):
                    features, _ = tower.embed(x)
                return features.float(), None

            return precision.Runner("bf16", tokens, embed, tower, torch.bfloat16)

        return [("bf16", bf16)]
    if name == "fp16":
        return [("fp16", lambda: precision.Runner("fp16", tokens, _tower_embed(copy.deepcopy(tower).half())))]
    if name == "int8":

        def int8() -> precision.Runner:
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(tower), {nn.Linear}, dtype=torch.qint8)
            return precision.Runner("int8", tokens, _tower_embed(quantized))

        return [("int8 (dynamic, linear layers)", int8)]
    raise precision.PrecisionUnavailable(f"unknown precision {name!r}")


class TextEncoder:
    """The text tower of a CLIP package: its tokenizer, and its network at the precision its own probe allowed.
    `load` and `run` belong on the Backbone's device thread; `tokenize` runs anywhere."""

    def __init__(
        self,
        spec: ModelSpec,
        device: torch.device,
        requested_precision: str,
        probe_min_cosine: float,
        compile_mode: str,
        slice_size: int,
    ) -> None:
        if spec.clip is None:
            raise ValueError(f"{spec.identity} has no text tower")
        self.spec = spec
        self.clip = spec.clip
        self.device = device
        self.requested_precision = requested_precision
        self.probe_min_cosine = probe_min_cosine
        self.compile_mode = compile_mode
        self.slice_size = slice_size
        self.context_length = self.clip.context_length
        self.selection: precision.Selection | None = None
        self.compilation = "not loaded"
        self._tokenizer: Any = None
        self._runner: precision.Runner | None = None

    @property
    def precision(self) -> str:
        return self._runner.name if self._runner is not None else "not loaded"

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """[N, context_length] token ids, exactly as open_clip's tokenizer makes them (over-long text cut off)."""
        if self._tokenizer is None:
            raise RuntimeError("TextEncoder.tokenize() called before load()")
        return self._tokenizer(texts)

    def load(
        self, tower: TextTower, in_background: bool = False, swapped: Callable[[str, bool, str], None] | None = None
    ) -> compilation.Deferred | None:
        """Load on the device thread; with `in_background`, what is left to compile there after (or None)."""
        self._tokenizer = build_tokenizer(self.clip)
        tower = tower.to(self.device).eval()
        probe = functools.cache(lambda: self._slices(self.tokenize(list(PROBE_TEXTS)).to(self.device)))
        self.selection = precision.select_runner(
            self.requested_precision,
            tower,
            self.device,
            self.spec.precisions,
            probe=probe,
            calibration=probe,
            min_cosine=self.probe_min_cosine,
            variants_of=text_variants,
        )
        deferred = None
        if self.device.type == "cpu":
            compile_now = functools.partial(
                compilation.compile_selection,
                self.selection,
                text_variants("fp32", tower, self.device, probe)[0][1](),
                probe=probe,
                batch_sizes=tuple(range(1, self.slice_size + 1)),
                min_cosine=self.probe_min_cosine,
                mode=self.compile_mode,
            )
            refused = compilation.why_not_compiled(self.selection, self.compile_mode)
            if refused is None and in_background:
                self.compilation = "eager until the tower compiled in the background passes its probe"

                def swap(selection: precision.Selection, note: str) -> None:
                    self.compilation = note
                    if selection.compiled:
                        self.selection, self._runner = selection, selection.runner
                    if swapped is not None:
                        swapped("text", selection.compiled, note)

                deferred = compilation.Deferred("text", self.selection, compile_now, swap)
            else:
                self.selection, self.compilation = compile_now()
        else:
            self.compilation = "not compiled (CPU only)"
        self._runner = self.selection.runner
        logger.info(
            "text tower of %s:%s at %s (%s; %s)",
            self.spec.name,
            self.spec.version,
            self._runner.name,
            self.selection.reason,
            self.compilation,
        )
        return deferred

    def _slices(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        return [tokens[i : i + self.slice_size] for i in range(0, len(tokens), self.slice_size)]

    def run(self, tokens: torch.Tensor) -> np.ndarray:
        """[N, D] float32 L2-normalised text embeddings of [N, context_length] token ids."""
        if self._runner is None:
            raise RuntimeError("TextEncoder.run() called before load()")
        batches = self._slices(tokens) if self.device.type == "cpu" else [tokens]
        parts = []
        with torch.inference_mode():
            for batch in batches:
                features, _ = self._runner.embed(batch.to(self.device), False)
                parts.append(nn.functional.normalize(features.float(), dim=1).cpu().numpy())
        return np.concatenate(parts)
