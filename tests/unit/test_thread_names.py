"""The server's threads carry their stage's name at the OS level, so `top -H` and /proc show where the CPU goes."""

import asyncio
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from predictor.embedding.backbone import Backbone
from predictor.embedding.model_package import default_spec
from predictor.observability.thread_names import OS_NAME_BYTES, name_os_thread
from predictor.serving.image_preparation import decode_executor
from predictor.serving.search_pool import SearchPool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from Linux's /proc")


def os_thread_name(native_id: int) -> str:
    """The name `top -H` and `ps -L` show for one of this process's threads."""
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def test_the_device_thread_and_the_openmp_threads_it_starts_carry_its_name():
    backbone = Backbone(default_spec(), "cpu", "fp32")
    backbone.load()
    size = backbone.spec.preprocessing.input_size
    backbone.run(np.zeros((2, size, size, 3), dtype=np.uint8))
    device_thread = backbone.executor.submit(threading.get_native_id).result()
    assert os_thread_name(device_thread) == "device-cpu_0"
    # OpenMP's workers are not Python threads; /proc lists every thread of the process.
    named = [
        task for task in Path("/proc/self/task").iterdir() if (task / "comm").read_text().strip() == "device-cpu_0"
    ]
    assert len(named) >= torch.get_num_threads()


def test_decode_and_search_workers_carry_their_stage_names():
    decoder = decode_executor().submit(threading.get_native_id).result()
    assert os_thread_name(decoder).startswith("decode_")

    pool = SearchPool(lambda options, vectors, timeout_s: [threading.get_native_id()] * len(vectors), workers=1)
    [searcher] = asyncio.run(pool.search("options", np.zeros((1, 4), dtype=np.float32)))
    assert os_thread_name(searcher) == "search_0"


def test_a_long_python_name_is_cut_to_what_the_os_keeps():
    names = []

    def run():
        name_os_thread()
        names.append(os_thread_name(threading.get_native_id()))

    thread = threading.Thread(target=run, name="a-thread-name-longer-than-the-kernel-keeps")
    thread.start()
    thread.join()
    assert names == ["a-thread-name-longer-than-the-kernel-keeps"[:OS_NAME_BYTES]]
