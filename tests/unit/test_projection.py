import numpy as np
import pytest
import torch

from predictor.embedding.projection import DeviceProjection, fit_projection, load_projection, save_projection


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(0)
    shared = rng.normal(size=64) * 3  # what every image of a catalogue has in common
    return shared + rng.normal(size=(300, 64)) * np.linspace(2, 0.1, 64)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_centring_removes_what_every_image_shares(features):
    projection = fit_projection(features)
    before, after = unit(features), projection.apply(features)
    assert projection.output_dimension == 64 and projection.kind == "centre"
    assert (before @ before.T).mean() > 0.5 and abs((after @ after.T).mean()) < 0.05


def test_pca_cuts_the_dimension_and_whitening_evens_out_the_components(features):
    plain, whitened = fit_projection(features, 16), fit_projection(features, 16, 0.5)
    assert plain.matrix.shape == whitened.matrix.shape == (64, 16)
    centred = unit(features) - plain.mean
    spread_plain, spread_white = (centred @ plain.matrix).std(axis=0), (centred @ whitened.matrix).std(axis=0)
    assert spread_plain[0] / spread_plain[-1] > 1.3 and spread_white.max() / spread_white.min() < 1.05


def test_fitting_is_reproducible_and_refuses_impossible_dimensions(features):
    np.testing.assert_array_equal(fit_projection(features, 8).matrix, fit_projection(features, 8).matrix)
    with pytest.raises(ValueError, match="projection dimension must be between 1 and"):
        fit_projection(features[:10], 32)
    with pytest.raises(ValueError, match="whitening power"):
        fit_projection(features, 8, 0.9)


def test_a_saved_projection_loads_identically_and_the_device_applies_the_same_arithmetic(features, tmp_path):
    projection = fit_projection(features, 16, 0.5)
    sha = save_projection(projection, tmp_path / "p.safetensors")
    loaded = load_projection(tmp_path / "p.safetensors")
    assert len(sha) == 64
    np.testing.assert_array_equal(loaded.matrix, projection.matrix)
    on_device = DeviceProjection(loaded, torch.device("cpu"))(torch.from_numpy(features.astype(np.float32)))
    np.testing.assert_allclose(on_device.numpy(), projection.apply(features), atol=1e-5)
    identity = DeviceProjection(None, torch.device("cpu"))(torch.from_numpy(features.astype(np.float32)))
    np.testing.assert_allclose(identity.numpy(), unit(features), atol=1e-5)
