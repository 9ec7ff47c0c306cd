"""EfficientNet-Lite0 (Tan & Le, 2019), laid out so the published PyTorch state dict loads key for key.

Lite variants drop squeeze-and-excitation and swish for ReLU6, and keep the stem and head widths fixed. Convolutions
use TensorFlow "SAME" padding because the weights were trained with it.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.01
BN_EPS = 1e-3
EMBEDDING_DIM = 1280
NUM_CLASSES = 1000

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage of EfficientNet-B0/Lite0.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


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


class EfficientNetLite0(nn.Module):
    """Returns pooled 1280-d features from `features()`, ImageNet-1k logits from `forward()`."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _batch_norm(32)
        blocks = []
        for repeats, kernel, stride, expand, in_channels, out_channels in LITE0_STAGES:
            for index in range(repeats):
                first = index == 0
                blocks.append(
                    MBConvBlock(
                        kernel,
                        stride if first else 1,
                        expand,
                        in_channels if first else out_channels,
                        out_channels,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(320, EMBEDDING_DIM, 1, bias=False)
        self._bn1 = _batch_norm(EMBEDDING_DIM)
        self._fc = nn.Linear(EMBEDDING_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self._fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))
