"""How a network's last feature map becomes one vector: average pooling, or generalised-mean (GeM) pooling.

GeM (Radenović et al., 2018) raises activations to the power p before averaging, so a strong local response (the
subject) outweighs a weak, wide one (the background); p = 1 is the average and p -> infinity the maximum.
"""

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("average", "gem")
GEM_DEFAULT_P = 3.0
# Activations after ReLU6 can be exactly zero; 0 ** (1/p) has an infinite gradient and pow(0, p) may underflow.
GEM_EPS = 1e-6


class AveragePool(nn.Module):
    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(feature_map, 1), 1)


class GeMPool(nn.Module):
    def __init__(self, p: float = GEM_DEFAULT_P) -> None:
        super().__init__()
        if p < 1:
            raise ValueError(f"GeM pooling needs p >= 1, got {p}")
        self.p = float(p)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(feature_map.clamp(min=GEM_EPS).pow(self.p), 1)
        return torch.flatten(pooled.pow(1.0 / self.p), 1)


def make_pooling(kind: str, p: float = GEM_DEFAULT_P) -> nn.Module:
    if kind == "average":
        return AveragePool()
    if kind == "gem":
        return GeMPool(p)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {kind!r}")


class PooledNetwork(nn.Module):
    """The contract every architecture keeps: `feature_map()` from the network, `features()` pooled as the model
    package says, and `classify()` on average-pooled features, which is what the classifier head was trained on."""

    pool: nn.Module

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, averaged: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x))

    def embed(self, x: torch.Tensor, with_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pooled features and, when asked, class logits, from one pass over the network."""
        feature_map = self.feature_map(x)
        features = self.pool(feature_map)
        if not with_logits:
            return features, None
        averaged = features if isinstance(self.pool, AveragePool) else AveragePool()(feature_map)
        return features, self.classify(averaged)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, logits = self.embed(x, with_logits=True)
        assert logits is not None  # embed() returns them when asked
        return logits
