import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from predictor.embedding.architectures.efficientnet_lite import EfficientNetLite0
from predictor.embedding.backbone import (
    SLICES,
    SLICES_WITH_TCMALLOC,
    Backbone,
    resolve_device,
    slice_sizes,
    sliced,
)
from predictor.embedding.model_package import default_spec, load_state_dict
from predictor.imaging.decoding import ImageLimits, Preprocessing, load_pixels


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    # fp32: these tests are about the network's own mechanics; tests/unit/test_precision.py covers the others.
    model = Backbone(default_spec(), device="cpu", precision_name="fp32")
    model.load()
    return model


def pixels_of(*names: str) -> np.ndarray:
    return np.stack([load_pixels(png(getattr(data, name)()), ImageLimits(), Preprocessing()) for name in names])


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(out, format="PNG")
    return out.getvalue()


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


def test_batch_norms_fold_into_their_convolutions_without_changing_the_network():
    from predictor.embedding.backbone import fold_batch_norms
    from predictor.embedding.model_package import build_network

    spec = default_spec()
    reference, folded = build_network(spec).eval(), build_network(spec).eval()
    assert fold_batch_norms(folded) == 49
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(folded.features(x), reference.features(x), rtol=1e-4, atol=1e-4)


class _SharedConv(torch.nn.Module):
    """A convolution whose output also feeds a second consumer, and a norm that does not follow a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.BatchNorm2d(4)
        self.pool_norm = torch.nn.BatchNorm2d(3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return (self.norm(y) + y).mean((2, 3)) + self.pool_norm(x).mean((2, 3)).sum(1, keepdim=True)


class _Untraceable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.BatchNorm2d(4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow does not trace
            x = -x
        return self.norm(self.conv(x))


def test_only_norms_that_see_nothing_but_one_convolution_are_folded():
    from predictor.embedding.backbone import fold_batch_norms

    shared = _SharedConv().eval()
    assert fold_batch_norms(shared) == 0
    assert isinstance(shared.norm, torch.nn.BatchNorm2d)
    untraceable = _Untraceable().eval()
    assert fold_batch_norms(untraceable) == 0
    assert isinstance(untraceable.norm, torch.nn.BatchNorm2d)


def test_cpu_network_and_input_are_channels_last_float32(backbone):
    stem = backbone._network._conv_stem.weight
    assert stem.dtype == torch.float32 and stem.is_contiguous(memory_format=torch.channels_last)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    original = pixels.copy()
    batch = backbone._to_input(pixels)
    assert batch.shape == (2, 3, 224, 224) and batch.is_contiguous(memory_format=torch.channels_last)
    mean = torch.tensor(default_spec().mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(default_spec().std).view(1, 3, 1, 1) * 255
    expected = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - mean) / std
    torch.testing.assert_close(batch, expected)
    np.testing.assert_array_equal(pixels, original)


def test_half_precision_is_chosen_only_for_cuda(monkeypatch):
    cpu = Backbone(default_spec(), device="cpu")
    assert (cpu.half, cpu.dtype) == (False, torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = Backbone(default_spec(), device="cuda")
    assert cuda.device.type == "cuda" and (cuda.half, cuda.dtype) == (True, torch.float16)


def test_large_cpu_batches_run_in_slices_of_the_compiled_sizes_with_the_same_results(backbone, monkeypatch):
    pixels = pixels_of(*(["chelsea", "coffee", "astronaut", "rocket", "camera"] * 4))
    seen = []
    features = backbone._network.feature_map
    monkeypatch.setattr(backbone._network, "feature_map", lambda x: seen.append(len(x)) or features(x))
    monkeypatch.setattr(backbone, "slices", ())
    whole = backbone.run(pixels, with_probabilities=True)
    monkeypatch.setattr(backbone, "slices", SLICES_WITH_TCMALLOC)
    sliced = backbone.run(pixels, with_probabilities=True)
    assert seen == [20, 16, 4], "the largest slice that fits, then the rest"
    np.testing.assert_allclose(sliced.embeddings, whole.embeddings, atol=1e-5)
    np.testing.assert_allclose(sliced.probabilities, whole.probabilities, atol=1e-5)
    assert sliced.embeddings.shape == (20, 1280) and sliced.probabilities.shape == (20, 1000)


def test_cpu_backbones_keep_freed_memory_for_the_next_batch(backbone):
    import platform

    from predictor.embedding.backbone import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator settings are glibc's")
    assert keep_freed_memory()


def test_every_cpu_network_runs_its_torch_work_on_the_one_device_thread(backbone):
    # A second thread running torch would give OpenMP a second team of threads, which slows every forward pass.
    import concurrent.futures
    import threading

    other = Backbone(default_spec(), "cpu", "fp32")
    assert other.executor is backbone.executor
    threads = set()
    embed = backbone._runner.embed
    backbone._runner.embed = lambda x, with_logits: (threads.add(threading.get_ident()), embed(x, with_logits))[1]
    try:
        pixels = pixels_of("chelsea", "coffee")
        from_main = backbone.run(pixels).embeddings
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            from_elsewhere = pool.submit(backbone.run, pixels).result().embeddings
        from_device = backbone.executor.submit(backbone.run, pixels).result().embeddings
    finally:
        backbone._runner.embed = embed
    assert threads == {backbone.executor.submit(threading.get_ident).result()}
    np.testing.assert_array_equal(from_main, from_elsewhere)
    np.testing.assert_array_equal(from_main, from_device)


def test_a_batch_runs_as_the_largest_slices_that_fit_and_int8_keeps_the_sizes_it_was_compiled_for():
    assert [part.stop - part.start for part in sliced(13, SLICES_WITH_TCMALLOC)] == [12, 1]
    assert [part.stop - part.start for part in sliced(11, SLICES_WITH_TCMALLOC)] == [8, 3]
    assert [part.stop - part.start for part in sliced(32, SLICES_WITH_TCMALLOC)] == [16, 16]
    assert [part.stop - part.start for part in sliced(13, SLICES)] == [4, 4, 4, 1]
    assert sliced(0, SLICES) == [] and sliced(40, ()) == [slice(0, 40)]
    assert slice_sizes(torch.device("cpu"), "int8") == SLICES
    assert slice_sizes(torch.device("cuda"), "fp16") == ()


def test_the_larger_slices_are_chosen_only_where_tcmalloc_allocates():
    library = "libtcmalloc_minimal.so.4"
    if subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout.count(library) == 0:
        pytest.skip(f"{library} is not installed (make tools installs it)")
    ask = (
        "import torch; from predictor.embedding.backbone import slice_sizes as s; print(s(torch.device('cpu'), 'fp32'))"
    )
    environment = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}

    def chosen(environment: dict[str, str]) -> str:
        return subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, env=environment).stdout

    plain, preloaded = chosen(environment), chosen({**environment, "LD_PRELOAD": library})
    assert plain.strip() == str(SLICES)
    assert preloaded.strip() == str(SLICES_WITH_TCMALLOC)
