"""The CPU image network in a child process: the same answers as in the server's process, and a child that dies
leaves the server answering."""

import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from harness.clip_models import make_package
from predictor.embedding.backbone import Backbone
from predictor.embedding.forward_process import CAPACITY
from predictor.embedding.model_package import default_spec, load_package
from predictor.embedding.probe_images import calibration_pixels


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    pixels = calibration_pixels(default_spec().preprocessing)
    # More than the shared buffer holds, so a batch also goes over in parts.
    return np.concatenate([pixels] * (CAPACITY // len(pixels) + 1))[: CAPACITY + 3]


@pytest.fixture(scope="module")
def in_process(photos):
    backbone = Backbone(default_spec(), "cpu", "fp32")
    backbone.load()
    return backbone.run(photos, with_probabilities=True)


def test_the_child_answers_as_the_server_process_would_and_a_dead_child_is_replaced_by_the_servers_own_network(
    photos, in_process, caplog, monkeypatch
):
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # a policy of the caller's own would be left to the child
        monkeypatch.delenv(key, raising=False)
    backbone = Backbone(default_spec(), "cpu", "fp32", compile_in_background=True, forward_process=True)
    backbone.load()
    assert backbone.forward_process is not None and backbone.forward_process.pid is None, "starts once asked"
    before_start = backbone.run(photos[:2])
    np.testing.assert_allclose(before_start.embeddings, in_process.embeddings[:2], atol=1e-5)

    backbone.start_background_compile()
    assert backbone.compile_done.wait(120), "the child reports within two minutes"
    assert "in the forward process" in backbone.compilation
    child_pid = backbone.forward_process.pid
    assert child_pid is not None and child_pid != os.getpid()
    child_environment = Path(f"/proc/{child_pid}/environ").read_bytes().split(b"\0")
    assert b"OMP_WAIT_POLICY=PASSIVE" in child_environment, "the child's OpenMP threads wait passively"
    assert "OMP_WAIT_POLICY" not in os.environ, "and this process's environment is as it was"

    served = backbone.run(photos, with_probabilities=True)
    np.testing.assert_allclose(served.embeddings, in_process.embeddings, atol=1e-5)
    assert served.probabilities is not None and in_process.probabilities is not None
    np.testing.assert_allclose(served.probabilities, in_process.probabilities, atol=1e-5)
    assert backbone.precision == "fp32"

    os.kill(child_pid, signal.SIGKILL)
    with caplog.at_level(logging.ERROR, logger="predictor.embedding.backbone"):
        after_death = backbone.run(photos[:3])
    np.testing.assert_allclose(after_death.embeddings, in_process.embeddings[:3], atol=1e-5)
    assert any("killed by signal 9" in record.getMessage() for record in caplog.records), caplog.text
    again = backbone.run(photos[3:5])
    np.testing.assert_allclose(again.embeddings, in_process.embeddings[3:5], atol=1e-5)
    backbone.forward_process.close()


def test_a_package_with_a_text_tower_keeps_both_towers_in_the_server_process(tmp_path):
    clip = load_package(make_package(tmp_path))
    assert Backbone(clip, "cpu", "fp32", forward_process=True).forward_process is None
    assert Backbone(default_spec(), "cpu", "fp32", forward_process=False).forward_process is None
