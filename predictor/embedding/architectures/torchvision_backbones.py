"""torchvision ResNets with the `features()`/`classify()` split the server needs. Weights come from a package file."""

import torch
import torchvision
from torch import nn

from predictor.embedding.architectures.pooling import AveragePool, PooledNetwork


class TorchvisionBackbone(PooledNetwork):
    """Wraps a torchvision ResNet; state dict keys are torchvision's own, so its published checkpoints load as-is."""

    def __init__(self, name: str, pool: nn.Module | None = None) -> None:
        super().__init__()
        self.net = getattr(torchvision.models, name)(weights=None)
        self.pool = pool if pool is not None else AveragePool()

    def _remap(self, state_dict: dict) -> dict:
        return {key if key.startswith("net.") else f"net.{key}": value for key, value in state_dict.items()}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
        return super().load_state_dict(self._remap(state_dict), strict=strict, assign=assign)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def classify(self, averaged: torch.Tensor) -> torch.Tensor:
        return self.net.fc(averaged)
