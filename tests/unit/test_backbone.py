import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from predictor.architectures.efficientnet_lite import EfficientNetLite0
from predictor.backbone import Backbone, resolve_device
from predictor.images import Preprocessing, resize_and_crop
from predictor.model_package import default_spec, load_state_dict


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    model = Backbone(default_spec(), device="cpu")
    model.load()
    return model


def pixels_of(*names: str) -> np.ndarray:
    return np.stack(
        [resize_and_crop(Image.fromarray(getattr(data, name)()).convert("RGB"), Preprocessing()) for name in names]
    )


def test_packaged_weights_load_exactly_with_no_missing_or_extra_tensors():
    result = EfficientNetLite0().load_state_dict(load_state_dict(default_spec().weights_path), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_chelsea_is_a_cat_and_coffee_is_espresso(backbone):
    probabilities = backbone.run(pixels_of("chelsea", "coffee"), with_probabilities=True).probabilities
    cat, coffee = probabilities.argmax(axis=1)
    assert 281 <= cat <= 285
    assert coffee == 967


def test_embeddings_are_unit_length_float32_of_the_model_dimension(backbone):
    embeddings = backbone.run(pixels_of("astronaut", "rocket", "camera")).embeddings
    assert embeddings.shape == (3, 1280) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_an_image_embeds_the_same_alone_or_in_a_batch(backbone):
    batch = pixels_of("astronaut", "rocket")
    together = backbone.run(batch).embeddings
    alone = backbone.run(batch[1:]).embeddings
    assert float(together[1] @ alone[0]) > 0.9999


def test_auto_device_is_cpu_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    assert resolve_device("auto").type == "cpu"


def test_asking_for_cuda_without_a_gpu_says_what_to_do():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(ValueError, match="no CUDA GPU is visible; use --device cpu or auto"):
        resolve_device("cuda")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_half_precision_embeddings_mean_the_same_as_cpu_float32(backbone):
    gpu = Backbone(default_spec(), device="cuda")
    gpu.load()
    batch = pixels_of("chelsea", "coffee", "astronaut", "rocket")
    cosines = (gpu.run(batch).embeddings * backbone.run(batch).embeddings).sum(axis=1)
    assert cosines.min() > 0.99
