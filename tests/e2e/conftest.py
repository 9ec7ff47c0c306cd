"""End-to-end fixtures: the sample catalogue, real Milvus (embedded file and server), real predictor processes.

What depends on the Milvus behind it (search results, filters, ids, collections) runs once per Milvus: the embedded
milvus-lite file and a real Milvus server (`milvus_uri_each`, `server_each`). What the server does with a request
before and after Milvus (parsing, refusals, statuses, sizes, logs) runs once, on the embedded default (`server`).
"""

import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from harness.executables import venv_executable
from harness.milvus_server import run_milvus_server
from harness.mlflow_server import MLFLOW_MISSING, mlflow_installed, run_mlflow_server
from harness.predictor_server import RunningServer, run_cli, run_predictor
from harness.s3_server import ACCESS_KEY, SEAWEEDFS_MISSING, identities_file, run_s3_server
from predictor.imaging.sample_catalogue import write_catalogue

BACKENDS = ["milvus-lite", "milvus-server"]


@dataclass(frozen=True)
class Catalogue:
    directory: Path
    photos: dict[str, Path]


def near_duplicate(original: bytes) -> bytes:
    """What a user's copy of a catalogue photo looks like: slightly cropped, resized, re-encoded."""
    image = Image.open(io.BytesIO(original)).convert("RGB")
    width, height = image.size
    dx, dy = int(width * 0.02), int(height * 0.02)
    image = image.crop((dx, dy, width - dx, height - dy))
    image = image.resize((int(image.width * 0.75), int(image.height * 0.75)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory) -> Catalogue:
    directory = tmp_path_factory.mktemp("catalogue")
    paths = write_catalogue(directory)
    return Catalogue(directory, {path.stem: path for path in paths})


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory):
    with run_milvus_server(tmp_path_factory.mktemp("milvus-server")) as uri:
        yield uri


def release_lite(uri: str) -> None:
    """Let go of this process's milvus-lite server for `uri` (a file is held by one process at a time)."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)


@pytest.fixture(scope="module", params=BACKENDS)
def module_milvus(request, tmp_path_factory):
    """A milvus-lite file of the test module's own (the process that opens one holds it), or the session's server."""
    if request.param != "milvus-lite":
        yield request.getfixturevalue("milvus_server_uri")
        return
    uri = str(tmp_path_factory.mktemp("module-milvus") / "milvus.db")
    yield uri
    release_lite(uri)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One real S3 server (SeaweedFS) for the session. Key `ACCESS_KEY` may do anything; key `lister` may only list
    (a run that reads any object with it fails), key `writer` may only write (listing is denied)."""
    if venv_executable("weed") is None:
        pytest.skip(SEAWEEDFS_MISSING)
    workdir = tmp_path_factory.mktemp("s3-server")
    identities = identities_file(
        workdir / "identities.json",
        {
            "admin": (ACCESS_KEY, ["Admin", "Read", "Write", "List", "Tagging"]),
            "lister": ("lister", ["List"]),
            "writer": ("writer", ["Write"]),
        },
    )
    with run_s3_server(workdir, identities) as running:
        yield running


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real MLflow tracking server for the session: starting one takes several seconds."""
    if not mlflow_installed():
        pytest.skip(MLFLOW_MISSING)
    with run_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as running:
        yield running


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus-lite") / "milvus.db")


@pytest.fixture(scope="session", params=BACKENDS)
def milvus_uri_each(request) -> str:
    if request.param == "milvus-lite":
        return request.getfixturevalue("milvus_uri")
    return request.getfixturevalue("milvus_server_uri")


def indexed(milvus_uri: str, catalogue: Catalogue) -> str:
    result = run_cli("index", str(catalogue.directory), "--milvus-uri", milvus_uri, "--collection", "images")
    assert result.returncode == 0, result.stderr
    return milvus_uri


@pytest.fixture(scope="session")
def indexed_uri(milvus_uri, catalogue) -> str:
    return indexed(milvus_uri, catalogue)


@pytest.fixture(scope="session")
def server(indexed_uri, tmp_path_factory) -> RunningServer:
    """Serving at `--precision auto`, as users get it by default, on the eager network: that a compiled network
    answers as the eager one is the image test's job (tests/container), and compiling here would cost every worker a
    core for a minute.
    """
    with run_predictor(indexed_uri, tmp_path_factory.mktemp("predictor")) as running:
        yield running


@pytest.fixture(scope="session", params=BACKENDS)
def server_each(request, catalogue, tmp_path_factory) -> RunningServer:
    """The shared server on milvus-lite, then one on a Milvus server indexed the same way."""
    if request.param == "milvus-lite":
        yield request.getfixturevalue("server")
        return
    uri = indexed(request.getfixturevalue("milvus_server_uri"), catalogue)
    with run_predictor(uri, tmp_path_factory.mktemp("predictor")) as running:
        yield running


@pytest.fixture(scope="session")
def exported_package(tmp_path_factory) -> Path:
    """The bundled model as `image-search export-model` writes it, once per worker: an export takes seconds."""
    directory = tmp_path_factory.mktemp("exported") / "model"
    result = run_cli("export-model", "--out", str(directory))
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="session")
def package_copy(exported_package) -> Callable[..., Path]:
    """`package_copy(directory, version=None)`: a copy of the exported package, its manifest set to `version`."""

    def copy(directory: Path, version: str | None = None) -> Path:
        shutil.copytree(exported_package, directory)
        if version is not None:
            manifest = json.loads((directory / "model.json").read_text())
            (directory / "model.json").write_text(json.dumps({**manifest, "version": version}, indent=2))
        return directory

    return copy
