"""A new server whose compile fails goes on serving on the eager network, and says so.

That a new server swaps the compiled network in while it serves, with no request failing over the swap and both
networks embedding alike, is the image's test (tests/container), which compiles anyway: a compile from an empty cache
costs a core for a minute or more, and CI runs that test on every build. tests/unit/test_compilation.py covers the
swap in process.

Each server here compiles into an Inductor cache of its own, empty at start, as a new pod's is.
"""

import re

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from harness.polling import wait_for
from harness.predictor_server import run_cli, run_predictor
from predictor.embedding import compilation

pytestmark = pytest.mark.skipif(
    compilation.missing_compiler() is not None,
    reason=f"Inductor cannot compile here: {compilation.missing_compiler()}",
)
SWAP_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def lite_index(catalogue, tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("cold-start") / "milvus.db")
    result = run_cli("index", str(catalogue.directory), "--milvus-uri", uri, "--collection", "images")
    assert result.returncode == 0, result.stderr
    return uri


def network_metrics(url: str) -> tuple[float | None, float | None]:
    """(image_search_network_compiled, image_search_network_serving_since_timestamp_seconds) of the image tower."""
    text = httpx.get(f"{url}/metrics", timeout=10).text

    def value(name: str) -> float | None:
        match = re.search(rf'^{name}\{{[^}}]*tower="image"[^}}]*\}} (\S+)$', text, re.MULTILINE)
        return float(match.group(1)) if match else None

    return value("image_search_network_compiled"), value("image_search_network_serving_since_timestamp_seconds")


def embed(client: httpclient.InferenceServerClient, photo: bytes) -> np.ndarray:
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo], dtype=np.object_))
    result = client.infer("image-search", [tensor], parameters={"top_k": 1, "return_embedding": True})
    return result.as_numpy("embedding")[0]


def test_a_failed_compile_leaves_the_eager_network_serving(lite_index, catalogue, tmp_path):
    # A compiler that exits non-zero: Inductor's build of the first kernel fails, as on a node with a broken toolchain.
    env = {"IMAGE_SEARCH_COMPILE": "auto", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "CXX": "false"}
    photo = catalogue.photos["rocket"].read_bytes()
    with run_predictor(lite_index, tmp_path, env=env) as server:
        _, eager_since = network_metrics(server.http_url)
        wait_for(
            lambda: "the image network stays eager: not compiled: " in server.log(),
            timeout_s=SWAP_TIMEOUT_S,
            what=f"the log to say the compile failed:\n{server.log()[-3000:]}",
        )
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        embedding = embed(client, photo)
        client.close()
        assert network_metrics(server.http_url) == (0, eager_since)
    assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-4
