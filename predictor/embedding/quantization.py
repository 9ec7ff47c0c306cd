"""int8: post-training static quantization of `feature_map()` with torchao's PT2E flow and the x86 Inductor quantizer.

The network is exported with a dynamic batch dimension (torch.export specialises TensorFlow "SAME" padding on the
fixed input size, so no architecture needs to be traceable by FX), observed on a fixed calibration set of real photos,
converted, and compiled by Inductor into oneDNN int8 kernels (VNNI or AMX). Pooling (average or GeM) and the
classifier head stay in fp32, on the dequantized feature map. Calibration is deterministic, so the same
weights and calibration pixels give the same int8 network on every start: it is made at load instead of stored.

Measured on a Xeon with AMX: FX eager-mode int8 (torch.ao's quantize_fx) ran 4x slower than fp32, because every
quantized op is a separate kernel with quantize/dequantize copies between them; only the compiled graph fuses them.
"""

import copy
import logging
import time
from collections.abc import Callable

import torch
from torch import nn

from predictor.embedding.architectures.pooling import PooledNetwork

logger = logging.getLogger(__name__)

MAX_BATCH = 1024


class _FeatureMap(nn.Module):
    def __init__(self, network: PooledNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.feature_map(x)


def quantize_feature_map(network: PooledNetwork, calibration: list[torch.Tensor]) -> nn.Module:
    """The converted (not yet compiled) int8 graph of `network.feature_map`; `network` itself is left as it was."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    wrapper = _FeatureMap(copy.deepcopy(network)).eval()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # Strict export: the quantizer finds convolutions by the source functions that only strict tracing records; a
    # non-strict export quantizes nothing and silently stays fp32.
    exported = torch.export.export(wrapper, (calibration[0],), dynamic_shapes=({0: batch},), strict=True).module()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for images in calibration:
            prepared(images)
    converted = convert_pt2e(prepared)
    quantized = sum("quantize_per_tensor" in str(node.target) for node in converted.graph.nodes)
    if not quantized:
        raise RuntimeError("the int8 quantizer found no convolution or linear layer to quantize")
    return converted


def int8_embed(
    network: PooledNetwork, calibration: list[torch.Tensor], batch_sizes: tuple[int, ...] = (4, 1, 2, 3)
) -> Callable[[torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor | None]]:
    """Quantize and compile; every batch size the server will run is compiled here, so no request waits for it."""
    import torch._inductor.config as inductor_config

    started = time.perf_counter()
    converted = quantize_feature_map(network, calibration)
    compiled = torch.compile(converted)
    example = calibration[0]
    # Freezing folds the int8 weights into constants, which lets Inductor pre-pack them for oneDNN.
    # Inference-mode tensors in channels-last, as the server runs them: another kind of tensor would compile again.
    with torch.inference_mode(), inductor_config.patch(freezing=True):
        for size in batch_sizes:
            compiled(example[:1].expand(size, *example.shape[1:]).clone(memory_format=torch.channels_last))
    logger.info(
        "int8 network calibrated on %d batches and compiled in %.1f s", len(calibration), time.perf_counter() - started
    )
    # The network's own embed() on the int8 feature map: a shallow copy shares every module and only its
    # feature_map is the compiled graph, so pooling and the classifier head are the architecture's, in fp32.
    quantized = copy.copy(network)
    setattr(quantized, "feature_map", lambda x: compiled(x).float())  # noqa: B010 - over the method, on this copy

    def embed(x: torch.Tensor, with_logits: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            return quantized.embed(x, with_logits=with_logits)

    return embed
