"""Precision choice, the load-time probe against fp32 and the fall-back, on the real network and real photos."""

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from predictor.embedding import precision
from predictor.embedding.backbone import Backbone
from predictor.embedding.model_package import default_spec
from predictor.embedding.probe_images import calibration_pixels, probe_pixels

CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = frozenset({"avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"})
EPYC_ZEN4 = frozenset({"avx512f", "avx512_bf16", "avx512_vnni"})
OLD_XEON = frozenset({"avx2", "avx512f"})
HAS_NATIVE_BF16 = "bf16" in precision.native_precisions(CPU)


@pytest.fixture(scope="module")
def fp32() -> Backbone:
    backbone = Backbone(default_spec(), "cpu", "fp32")
    backbone.load()
    return backbone


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512_bf16 amx_int8\n\n")
    assert precision.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512_bf16", "amx_int8"}
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (SAPPHIRE_RAPIDS, ("int8", "bf16", "fp32")),
        (EPYC_ZEN4, ("int8", "bf16", "fp32")),
        (OLD_XEON, ("fp32",)),
    ],
)
def test_native_cpu_precisions_follow_the_cpu_flags_fastest_first(flags, expected):
    assert precision.native_precisions(CPU, flags) == expected


def test_auto_takes_the_fastest_native_precision_the_package_allows():
    native = ("int8", "bf16", "fp32")
    assert precision.choose_precision("auto", CPU, ("fp32", "bf16", "fp16"), native) == "bf16"
    assert precision.choose_precision("auto", CPU, ("fp32", "bf16", "int8"), native) == "int8"
    assert precision.choose_precision("auto", CPU, ("fp32",), native) == "fp32"
    assert precision.choose_precision("auto", CPU, ("fp32", "bf16"), ("fp32",)) == "fp32"


def test_a_precision_the_cpu_does_not_run_natively_is_refused_with_what_to_do():
    with pytest.raises(precision.PrecisionUnavailable, match="does not run natively on this CPU.*--precision auto"):
        precision.choose_precision("bf16", CPU, ("fp32", "bf16"), ("fp32",))
    with pytest.raises(precision.PrecisionUnavailable, match="fp16 does not run natively"):
        precision.choose_precision("fp16", CPU, ("fp32", "fp16"), ("bf16", "fp32"))
    with pytest.raises(precision.PrecisionUnavailable, match="must be one of"):
        precision.choose_precision("fp8", CPU, ("fp32",), ("fp32",))


def test_int8_needs_a_package_that_allows_it(monkeypatch):
    with pytest.raises(precision.PrecisionUnavailable, match="package allows only fp32, bf16, fp16"):
        precision.choose_precision("int8", CPU, ("fp32", "bf16", "fp16"), ("int8", "bf16", "fp32"))
    # On a CPU that runs int8 natively (whatever this one runs), the bundled package still refuses it.
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(precision.CPU_INT8_FLAGS))
    assert "int8" in precision.native_precisions(CPU)
    with pytest.raises(precision.PrecisionUnavailable, match="package allows only"):
        Backbone(default_spec(), "cpu", "int8")


def test_probe_and_calibration_sets_are_fixed_real_photos_and_differ():
    preprocessing = default_spec().preprocessing
    probe, calibration = probe_pixels(preprocessing), calibration_pixels(preprocessing)
    side = preprocessing.input_size
    assert probe.shape == (34, side, side, 3) and calibration.shape == (36, side, side, 3)
    assert probe.dtype == np.uint8 and probe.std() > 20
    np.testing.assert_array_equal(probe, probe_pixels(preprocessing))
    assert not any((calibration == image).all(axis=(1, 2, 3)).any() for image in probe)


@pytest.mark.skipif(not HAS_NATIVE_BF16, reason="this CPU has no native bf16 (avx512_bf16 or amx_bf16)")
def test_bf16_serves_only_after_its_embeddings_pass_the_probe_against_fp32(fp32, caplog):
    with caplog.at_level(logging.INFO, logger="predictor"):
        bf16 = Backbone(default_spec(), "cpu", "bf16")
        bf16.load()
    assert bf16.precision == "bf16" and bf16.selection.min_cosine >= precision.PROBE_MIN_COSINE
    assert any("at bf16" in record.getMessage() for record in caplog.records)
    # Photos the probe never saw: whole catalogue photos, not its quadrants.
    photos = calibration_pixels(default_spec().preprocessing)[:12]
    cosines = (bf16.run(photos).embeddings * fp32.run(photos).embeddings).sum(axis=1)
    assert cosines.min() >= precision.PROBE_MIN_COSINE
    labels = bf16.run(photos[:6], with_probabilities=True).probabilities.argmax(axis=1)
    np.testing.assert_array_equal(labels, fp32.run(photos[:6], with_probabilities=True).probabilities.argmax(axis=1))


@pytest.mark.skipif(not HAS_NATIVE_BF16, reason="this CPU has no native bf16 (avx512_bf16 or amx_bf16)")
def test_a_precision_that_fails_the_probe_falls_back_to_fp32_and_logs_why(fp32, caplog):
    network = fp32._network
    # One batch of the probe is enough to show the fall-back; the whole probe runs at every load (the test above).
    batches = fp32._input_batches(probe_pixels(fp32.spec.preprocessing)[:4])
    with caplog.at_level(logging.WARNING, logger="predictor.embedding.precision"):
        # No reduced precision reproduces fp32 exactly, so a bar above 1 always fails.
        selection = precision.select_runner(
            "bf16", network, CPU, ("fp32", "bf16"), lambda: batches, lambda: [], min_cosine=1.01
        )
    assert (selection.tried, selection.variant, selection.runner.name) == ("bf16", "fp32", "fp32")
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "bf16 embeds the probe images with cosine down to 0.99" in warning and "serving fp32" in warning


def test_auto_on_a_cpu_without_reduced_precision_serves_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: OLD_XEON)
    backbone = Backbone(default_spec(), "cpu", "auto")
    assert backbone.planned_precision == "fp32"


def test_a_package_can_allow_int8_and_the_spec_carries_it():
    spec = replace(default_spec(), precisions=("fp32", "int8"))
    assert precision.choose_precision("auto", CPU, spec.precisions, ("int8", "bf16", "fp32")) == "int8"


HAS_NATIVE_INT8 = "int8" in precision.native_precisions(CPU)


def _int8_and_fp32(fp32: Backbone, calibration_images: int, probe_images: int) -> tuple[object, np.ndarray]:
    """The converted int8 graph of fp32's network and its probe cosines against fp32, uncompiled: the reference int8
    ops compute what the compiled oneDNN kernels compute (`make bench-precision` runs those)."""
    from predictor.embedding.quantization import quantize_feature_map

    network = fp32._network
    calibration = fp32._input_batches(calibration_pixels(fp32.spec.preprocessing)[:calibration_images])
    converted = quantize_feature_map(network, calibration)
    int8 = precision.Runner("int8", torch.float32, lambda x, _: (network.pool(converted(x)), None))
    batches = fp32._input_batches(probe_pixels(fp32.spec.preprocessing)[:probe_images])
    return converted, precision.probe_cosines(precision.fp32_runner(network), int8, batches)


@pytest.mark.skipif(not HAS_NATIVE_INT8, reason="this CPU has no native int8 (avx512_vnni, avx_vnni or amx_int8)")
def test_int8_is_really_quantized_and_still_means_what_fp32_means(fp32):
    # One small batch each way: export, calibration and the quantized ops cost seconds, not the full probe's minutes.
    converted, cosines = _int8_and_fp32(fp32, calibration_images=4, probe_images=4)
    assert sum("quantize_per_tensor" in str(node.target) for node in converted.graph.nodes) > 40
    assert 0.9 < cosines.min() and cosines.max() < 0.99999, "int8 changes the embeddings a little, never a lot"
    assert fp32._network._conv_stem.weight.dtype == torch.float32, "the fp32 network is left as it was"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_NATIVE_INT8, reason="this CPU has no native int8 (avx512_vnni, avx_vnni or amx_int8)")
def test_int8_calibrated_on_the_whole_set_misses_the_probe_bar_on_lite0(fp32):
    # The full calibration and probe sets, as the server's load uses them (20 s to minutes on a busy CPU).
    _, cosines = _int8_and_fp32(
        fp32, calibration_images=len(calibration_pixels(fp32.spec.preprocessing)), probe_images=34
    )
    # Close to fp32, but not close enough for every probe image: the server falls back. How many clear the bar
    # depends on the CPU's int8 kernels (on one with avx512_bf16, none did: 0.9946 at most).
    assert 0.9 < cosines.min() < precision.PROBE_MIN_COSINE


def test_cuda_runs_fp16_by_default_and_refuses_int8(monkeypatch):
    from predictor.embedding.model_package import DEFAULT_PRECISIONS, PRECISIONS

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    cuda = torch.device("cuda")
    assert precision.native_precisions(cuda) == ("fp16", "bf16", "fp32")
    assert precision.choose_precision("auto", cuda, DEFAULT_PRECISIONS) == "fp16"
    with pytest.raises(precision.PrecisionUnavailable, match="int8 does not run natively on a CUDA GPU"):
        precision.choose_precision("int8", cuda, PRECISIONS)


def test_the_fp16_runner_keeps_the_fp32_network_and_means_the_same(fp32):
    # The CUDA path's half-precision copy, run where it can be here: on the CPU.
    batches = fp32._input_batches(probe_pixels(fp32.spec.preprocessing)[:4])
    half = precision.fp16_runner(fp32._network)
    cosines = precision.probe_cosines(precision.fp32_runner(fp32._network), half, batches)
    assert half.input_dtype == torch.float16 and fp32._network._conv_stem.weight.dtype == torch.float32
    assert cosines.min() > 0.99
