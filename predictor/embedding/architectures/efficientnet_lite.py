"""EfficientNet-Lite0/1/2 (Tan & Le, 2019), laid out so the published PyTorch state dicts load key for key.

Lite variants drop squeeze-and-excitation and swish for ReLU6, and keep the stem and head widths fixed; the larger
ones are deeper and wider in between. Convolutions use TensorFlow "SAME" padding because the weights were trained
with it.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from predictor.embedding.architectures.pooling import AveragePool, PooledNetwork

BN_MOMENTUM = 0.01
BN_EPS = 1e-3
STEM_CHANNELS = 32
EMBEDDING_DIM = 1280
NUM_CLASSES = 1000

# (kernel, stride, expand_ratio) per stage, shared by every variant.
STAGE_SHAPES = ((3, 1, 1), (3, 2, 6), (5, 2, 6), (3, 2, 6), (5, 1, 6), (5, 2, 6), (3, 1, 6))


@dataclass(frozen=True)
class LiteVariant:
    repeats: tuple[int, ...]
    widths: tuple[int, ...]  # output channels of each stage


LITE0 = LiteVariant(repeats=(1, 2, 2, 3, 3, 4, 1), widths=(16, 24, 40, 80, 112, 192, 320))
LITE1 = LiteVariant(repeats=(1, 3, 3, 4, 4, 5, 1), widths=(16, 24, 40, 80, 112, 192, 320))
LITE2 = LiteVariant(repeats=(1, 3, 3, 4, 4, 5, 1), widths=(16, 24, 48, 88, 120, 208, 352))


class SamePadConv2d(nn.Conv2d):
    """Conv2d that pads like TensorFlow's "SAME", for any input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = self._same_padding(height, 0)
        pad_w = self._same_padding(width, 1)
        if pad_h % 2 == 0 and pad_w % 2 == 0:
            # Symmetric: the convolution pads by itself, without the copy of the whole input that F.pad makes.
            padding = (pad_h // 2, pad_w // 2)
            return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def _same_padding(self, size: int, axis: int) -> int:
        stride, kernel, dilation = self.stride[axis], self.kernel_size[axis], self.dilation[axis]
        return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual block; attribute names match the published checkpoint."""

    def __init__(self, kernel: int, stride: int, expand_ratio: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = SamePadConv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = SamePadConv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_skip else out


class EfficientNetLite(PooledNetwork):
    """1280-d features from `features()`, ImageNet-1k logits from `forward()`."""

    def __init__(self, variant: LiteVariant = LITE0, pool: nn.Module | None = None) -> None:
        super().__init__()
        self.pool = pool if pool is not None else AveragePool()
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _batch_norm(STEM_CHANNELS)
        blocks = []
        in_channels = STEM_CHANNELS
        for (kernel, stride, expand), repeats, out_channels in zip(
            STAGE_SHAPES, variant.repeats, variant.widths, strict=True
        ):
            for index in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if index == 0 else 1, expand, in_channels, out_channels))
                in_channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(in_channels, EMBEDDING_DIM, 1, bias=False)
        self._bn1 = _batch_norm(EMBEDDING_DIM)
        self._fc = nn.Linear(EMBEDDING_DIM, NUM_CLASSES)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def classify(self, averaged: torch.Tensor) -> torch.Tensor:
        return self._fc(averaged)


def EfficientNetLite0(pool: nn.Module | None = None) -> EfficientNetLite:  # noqa: N802 - reads as the class it builds
    return EfficientNetLite(LITE0, pool)
