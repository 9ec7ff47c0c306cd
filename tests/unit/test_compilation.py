"""Compiling the network at load: what serves, what it embeds, and what happens when compiling is not possible."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from predictor.embedding import compilation, precision
from predictor.embedding.backbone import CPU_SLICE, Backbone
from predictor.embedding.model_package import default_spec
from predictor.embedding.probe_images import calibration_pixels

CPU = torch.device("cpu")
HAS_COMPILER = compilation.missing_compiler() is None
HAS_NATIVE_BF16 = "bf16" in precision.native_precisions(CPU)
needs_compiler = pytest.mark.skipif(
    not HAS_COMPILER, reason=f"Inductor cannot compile here: {compilation.missing_compiler()}"
)


class TinyNetwork(nn.Module):
    """The architecture contract (feature_map, embed) at a size that compiles in a second or two."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))

    def embed(self, x: torch.Tensor, with_logits: bool = False):
        return self.feature_map(x).mean(dim=(2, 3)), None


def tiny_selection() -> tuple[precision.Selection, precision.Runner, list[torch.Tensor]]:
    torch.manual_seed(0)
    runner = precision.fp32_runner(TinyNetwork().eval())
    batches = [torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)]
    return precision.Selection(runner, "fp32", "fp32", "fp32", None, "asked for"), runner, batches


@pytest.fixture(scope="module")
def eager() -> Backbone:
    backbone = Backbone(default_spec(), "cpu", "fp32")
    backbone.load()
    return backbone


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    # Whole photos the probe never sees.
    return calibration_pixels(default_spec().preprocessing)[:9]


# The default network compiled for real: a few minutes each on two cores with a cold cache, so `make test-slow` runs
# them; `make test` compiles the tiny network below, and in CI the image test compiles the default network in the
# container and swaps it in under load (tests/container).
@pytest.mark.slow
@needs_compiler
def test_a_compiled_network_embeds_as_the_eager_one_and_no_request_waits_for_a_compile(eager, photos, caplog):
    with caplog.at_level(logging.INFO, logger="predictor"):
        compiled = Backbone(default_spec(), "cpu", "fp32", compile_mode="auto")
        compiled.load()
    assert compiled.selection.compiled and compiled.selection.variant == "fp32, compiled"
    assert f"compiled for batch sizes {', '.join(map(str, range(1, CPU_SLICE + 1)))}" in compiled.compilation
    loaded = [record.getMessage() for record in caplog.records if record.getMessage().startswith("loaded ")]
    assert loaded and " at fp32 (asked for; compiled for batch sizes 1, 2, 3, 4 in " in loaded[-1]
    graphs = counters["stats"]["unique_graphs"]
    # 9 images run as slices of 4, 4 and 1; then every other size a batch can have.
    cosines = (compiled.run(photos).embeddings * eager.run(photos).embeddings).sum(axis=1)
    for size in range(1, CPU_SLICE + 1):
        compiled.run(photos[:size], with_probabilities=True)
    assert counters["stats"]["unique_graphs"] == graphs
    assert cosines.min() > 0.9999
    labels = compiled.run(photos, with_probabilities=True).probabilities.argmax(axis=1)
    np.testing.assert_array_equal(labels, eager.run(photos, with_probabilities=True).probabilities.argmax(axis=1))


@pytest.mark.slow
@needs_compiler
def test_in_the_background_the_eager_network_serves_until_the_compiled_one_is_swapped_in(eager, photos, caplog):
    seen: list[tuple[str, str]] = []
    with caplog.at_level(logging.INFO, logger="predictor"):
        backbone = Backbone(default_spec(), "cpu", "fp32", compile_mode="auto", compile_in_background=True)
        backbone.load()
        backbone.watch_serving(lambda tower, network: seen.append((tower, network)))
        assert not backbone.compile_done.is_set(), "nothing compiles before the server asks"
        backbone.start_background_compile()
        served_eager = 0
        # Batches run while the network compiles, on the eager network; then the compile gets the cores.
        while not backbone.compile_done.is_set() and served_eager < 5:
            before = backbone.serving["image"]
            result = backbone.run(photos[:3])
            served_eager += before == "eager"
            assert result.embeddings.shape == (3, 1280)
        assert backbone.compile_done.wait(600)
    assert served_eager > 0 and seen == [("image", "eager"), ("image", "compiled")]
    assert backbone.selection.compiled and backbone.serving == {"image": "compiled"}
    assert backbone.compilation.startswith("compiled for batch sizes 1, 2, 3, 4 in ")
    messages = [record.getMessage() for record in caplog.records]
    loaded = [message for message in messages if message.startswith("loaded ")]
    assert "eager until the network compiled in the background passes its probe" in loaded[-1]
    assert any(message.startswith("serving the compiled image network from now on, ") for message in messages)
    cosines = (backbone.run(photos).embeddings * eager.run(photos).embeddings).sum(axis=1)
    assert cosines.min() > 0.9999


@pytest.mark.slow
@needs_compiler
def test_a_background_compile_that_fails_its_probe_leaves_the_eager_network_serving(photos, caplog):
    with caplog.at_level(logging.WARNING, logger="predictor"):
        # Compiling reorders floating-point sums, so no compiled network reproduces the eager one above cosine 1.
        backbone = Backbone(
            default_spec(), "cpu", "fp32", probe_min_cosine=1.01, compile_mode="auto", compile_in_background=True
        )
        backbone.load()
        backbone.start_background_compile()
        assert backbone.compile_done.wait(300)
    assert not backbone.selection.compiled and backbone.serving == {"image": "eager"}
    assert backbone.compilation.startswith("not compiled: compiled network embeds the probe images with cosine")
    assert any(record.getMessage().startswith("the image network stays eager: ") for record in caplog.records)
    assert backbone.run(photos[:2]).embeddings.shape == (2, 1280)


def test_each_kind_of_cpu_compiles_into_a_cache_of_its_own(monkeypatch, tmp_path):
    monkeypatch.delenv(compilation.CACHE_BASE_VARIABLE, raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    folder = compilation.use_a_cache_of_this_cpus_own()
    assert folder.parent == tmp_path and folder.name.startswith("cpu-")
    # Asked again (a second network in the process), it nests no deeper.
    assert compilation.use_a_cache_of_this_cpus_own() == folder
    identity = compilation.cpu_identity()
    assert torch.__version__ in identity
    if Path("/proc/cpuinfo").exists():
        assert any(line.startswith("flags") for line in identity.splitlines())
    monkeypatch.setattr(compilation, "cpu_identity", lambda: identity.replace("avx", "sse"))
    assert compilation.use_a_cache_of_this_cpus_own() != folder


@needs_compiler
@pytest.mark.skipif(not HAS_NATIVE_BF16, reason="this CPU has no native bf16 (avx512_bf16 or amx_bf16)")
def test_bf16_is_compiled_after_its_eager_way_passed_the_probe_and_passes_it_again(eager, photos):
    bf16 = Backbone(default_spec(), "cpu", "bf16", compile_mode="auto")
    bf16.load()
    assert bf16.precision == "bf16" and bf16.selection.compiled
    assert bf16.selection.variant.startswith("bf16") and bf16.selection.variant.endswith(", compiled")
    assert bf16.selection.min_cosine >= precision.PROBE_MIN_COSINE
    cosines = (bf16.run(photos).embeddings * eager.run(photos).embeddings).sum(axis=1)
    assert cosines.min() >= precision.PROBE_MIN_COSINE


def test_without_a_cpp_compiler_the_eager_network_serves_and_the_log_says_why(monkeypatch, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler")
    with caplog.at_level(logging.WARNING, logger="predictor.embedding.compilation"):
        backbone = Backbone(default_spec(), "cpu", "fp32", compile_mode="auto")
        backbone.load()
    assert not backbone.selection.compiled and backbone.selection.variant == "fp32"
    assert "not compiled: no C++ compiler ('no-such-compiler' is not on PATH" in backbone.compilation
    assert any("serving the eager network" in record.getMessage() for record in caplog.records)
    assert backbone.run(calibration_pixels(default_spec().preprocessing)[:2]).embeddings.shape == (2, 1280)


@needs_compiler
def test_a_compiled_network_that_fails_the_probe_is_not_served(caplog):
    selection, reference, batches = tiny_selection()
    with caplog.at_level(logging.WARNING, logger="predictor.embedding.compilation"):
        # Compiling reorders floating-point sums, so no compiled network reproduces the eager one above cosine 1.
        kept, note = compilation.compile_selection(selection, reference, lambda: batches, (2,), min_cosine=1.01)
    assert kept is selection and not kept.compiled
    assert note.startswith("not compiled: compiled network embeds the probe images with cosine down to")
    assert any("serving the eager network" in record.getMessage() for record in caplog.records)


@needs_compiler
def test_a_batch_size_that_was_not_compiled_runs_eager_instead_of_compiling(caplog):
    selection, reference, batches = tiny_selection()
    compiled, note = compilation.compile_selection(selection, reference, lambda: batches, (2,), min_cosine=0.999)
    assert compiled.compiled and note.startswith("compiled for batch sizes 2 in ")
    graphs = counters["stats"]["unique_graphs"]
    odd = torch.randn(3, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = compiled.runner.embed(odd, False)[0]
        expected = reference.embed(odd, False)[0]
    assert counters["stats"]["unique_graphs"] == graphs
    torch.testing.assert_close(got, expected)


def test_compile_off_and_an_unknown_mode(eager):
    selection, reference, batches = tiny_selection()
    kept, note = compilation.compile_selection(selection, reference, lambda: batches, (1,), 0.995, mode="off")
    assert kept is selection and note == "not compiled (compilation off)"
    assert not eager.selection.compiled and eager.compilation == "not compiled (compilation off)"
    with pytest.raises(ValueError, match="--compile must be one of auto, on, off, got 'fast'"):
        Backbone(default_spec(), "cpu", "fp32", compile_mode="fast")


def test_auto_compiles_a_batch_command_only_when_it_embeds_enough_images_to_pay_for_it():
    assert compilation.for_batch_job("auto", 20) == "off"
    assert compilation.for_batch_job("auto", compilation.WORTH_COMPILING_IMAGES) == "on"
    assert compilation.for_batch_job("on", 20) == "on" and compilation.for_batch_job("off", 10**6) == "off"
