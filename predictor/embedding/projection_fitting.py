"""`image-search fit-projection`: fit a catalogue's centring (and PCA) and write it as a new model version.

The new package holds the same weights, preprocessing and pooling plus the projection; its version names the
projection and the first 8 hex digits of the projection file's SHA-256, so it always gets a collection of its own.
"""

import random
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from predictor.embedding.model_package import ModelSpec, ProjectionFile, export_package, load_package
from predictor.embedding.projection import PROJECTION_NAME, Projection, fit_projection, save_projection


def sample_paths(paths: list[Path], sample: int | None, seed: int) -> list[Path]:
    """A reproducible sample: the same catalogue, sample size and seed always give the same files."""
    ordered = sorted(paths)
    if sample is None or sample >= len(ordered):
        return ordered
    return sorted(random.Random(seed).sample(ordered, sample))


def raw_features(spec: ModelSpec, paths: list[Path], device: str = "cpu") -> np.ndarray:
    """Unit-length pooled features of `paths` under `spec` with no projection: what a projection is fitted on."""
    from predictor.embedding.backbone import Backbone
    from predictor.embedding.file_embedding import backbone_embedder

    backbone = Backbone(replace(spec, projection=None, dimension=spec.feature_dimension), device)
    backbone.load()
    return backbone_embedder(backbone)(paths)


def projected_version(base_version: str, projection: Projection, sha256: str) -> str:
    kind = "centre" if projection.matrix is None else f"pca{projection.output_dimension}"
    return f"{base_version}-{kind}-{sha256[:8]}"


def write_projected_package(
    spec: ModelSpec, projection: Projection, out_dir: Path, fitted_on: dict, whitening_power: float = 0.0
) -> ModelSpec:
    """`spec` plus `projection`, written as a package in `out_dir`, and read back as it will be served."""
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / PROJECTION_NAME
        sha = save_projection(projection, staged)
        projection_file = ProjectionFile(
            path=staged,
            sha256=sha,
            kind=projection.kind,
            input_dim=projection.input_dimension,
            output_dim=projection.output_dimension,
            fitted_on=fitted_on,
            whitening_power=whitening_power if projection.matrix is not None else 0.0,
        )
        projected = replace(
            spec,
            version=projected_version(spec.version, projection, sha),
            dimension=projection.output_dimension,
            projection=projection_file,
        )
        export_package(projected, out_dir)
    return load_package(out_dir)


def fit_package(
    spec: ModelSpec,
    catalogue: list[Path],
    out_dir: Path,
    *,
    dimension: int | None = None,
    whitening_power: float = 0.0,
    sample: int | None = 2000,
    seed: int = 0,
    source: str = "",
    device: str = "cpu",
) -> ModelSpec:
    if spec.projection is not None:
        raise ValueError(f"{spec.identity} already has a projection; fit on the package it was made from")
    chosen = sample_paths(catalogue, sample, seed)
    if len(chosen) < 2:
        raise ValueError(f"fitting a projection needs at least 2 catalogue images, found {len(chosen)}")
    projection = fit_projection(raw_features(spec, chosen, device), dimension, whitening_power)
    fitted_on = {"source": source, "images": len(chosen), "sample": sample, "seed": seed}
    return write_projected_package(spec, projection, out_dir, fitted_on, whitening_power)
