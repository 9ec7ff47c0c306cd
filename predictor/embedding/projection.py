"""Post-processing fitted to a catalogue: centring on its mean vector, optionally PCA with (partial) whitening.

Applied identically at index and query time, after the network's pooled features and before the final L2
normalisation: normalise -> subtract the mean -> project -> normalise. Centring removes what every image of a
catalogue shares (a white clip-art background, say), so cosine similarity weighs what tells images apart. Whitening
divides each principal direction by a power of its spread; 0.5 is full whitening, 0 a plain rotation and cut.

Fitting is numpy only and the stored file is safetensors, so reading a package imports no torch.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

PROJECTION_NAME = "projection.safetensors"
# Added to each eigenvalue before whitening, relative to the largest, so near-empty directions are not blown up.
WHITENING_FLOOR = 1e-4


@dataclass(frozen=True)
class Projection:
    mean: np.ndarray  # [D] float32
    matrix: np.ndarray | None = None  # [D, d] float32; None centres only

    @property
    def input_dimension(self) -> int:
        return int(self.mean.shape[0])

    @property
    def output_dimension(self) -> int:
        return self.input_dimension if self.matrix is None else int(self.matrix.shape[1])

    @property
    def kind(self) -> str:
        return "centre" if self.matrix is None else "pca"

    def apply(self, features: np.ndarray) -> np.ndarray:
        """[N, D] pooled features -> [N, d] unit vectors, exactly as the backbone does it on its device."""
        x = _normalise(np.asarray(features, dtype=np.float32)) - self.mean
        if self.matrix is not None:
            x = x @ self.matrix
        return _normalise(x)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_projection(features: np.ndarray, dimension: int | None = None, whitening_power: float = 0.0) -> Projection:
    """Fit on [N, D] pooled features of catalogue images; `dimension` None centres only."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"fitting a projection needs at least 2 feature vectors, got shape {features.shape}")
    if not 0.0 <= whitening_power <= 0.5:
        raise ValueError(f"whitening power must be between 0 (none) and 0.5 (full), got {whitening_power}")
    unit = _normalise(features)
    mean = unit.mean(axis=0)
    if dimension is None:
        return Projection(mean.astype(np.float32))
    if not 0 < dimension <= min(features.shape[1], len(features) - 1):
        raise ValueError(
            f"projection dimension must be between 1 and min(feature dimension, images - 1) = "
            f"{min(features.shape[1], len(features) - 1)}, got {dimension}; fit on more images or ask for fewer"
        )
    centred = unit - mean
    covariance = centred.T @ centred / (len(centred) - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1][:dimension]
    values, vectors = eigenvalues[order], eigenvectors[:, order]
    # eigh's signs are arbitrary; fixing them makes a refit on the same data give the same file.
    vectors = vectors * np.where(vectors[np.abs(vectors).argmax(axis=0), range(dimension)] < 0, -1.0, 1.0)
    scale = np.power(np.maximum(values, 0) + WHITENING_FLOOR * values[0], -whitening_power)
    return Projection(mean.astype(np.float32), (vectors * scale).astype(np.float32))


def save_projection(projection: Projection, path: Path) -> str:
    """Write the projection as safetensors; returns the file's SHA-256 for the manifest."""
    from safetensors.numpy import save_file

    tensors = {"mean": np.ascontiguousarray(projection.mean, dtype=np.float32)}
    if projection.matrix is not None:
        tensors["matrix"] = np.ascontiguousarray(projection.matrix, dtype=np.float32)
    save_file(tensors, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_projection(path: Path) -> Projection:
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    if "mean" not in tensors or set(tensors) - {"mean", "matrix"}:
        raise ValueError(f"{path} must hold a 'mean' tensor and optionally a 'matrix'; has {sorted(tensors)}")
    mean, matrix = tensors["mean"], tensors.get("matrix")
    if mean.ndim != 1 or (matrix is not None and (matrix.ndim != 2 or matrix.shape[0] != mean.shape[0])):
        shapes = (mean.shape, None if matrix is None else matrix.shape)
        raise ValueError(f"{path}: mean must be [D] and matrix [D, d]; got {shapes}")
    return Projection(mean.astype(np.float32), None if matrix is None else matrix.astype(np.float32))


class DeviceProjection:
    """The same arithmetic as `Projection.apply`, on the backbone's device, in float32."""

    def __init__(self, projection: Projection | None, device: "torch.device") -> None:
        import torch

        self._mean = None if projection is None else torch.from_numpy(projection.mean).to(device)
        matrix = None if projection is None else projection.matrix
        self._matrix = None if matrix is None else torch.from_numpy(matrix).to(device)

    def __call__(self, features: "torch.Tensor") -> "torch.Tensor":
        from torch.nn.functional import normalize

        x = normalize(features.float(), dim=1)
        if self._mean is None:
            return x
        x = x - self._mean
        if self._matrix is not None:
            x = x @ self._matrix
        return normalize(x, dim=1)
