"""The V2 client is an optional extra: without it `image-search query` says which extra to install, in one line."""

import subprocess
import sys

import pytest

from harness.predictor_server import REPO_ROOT

# Python refuses to import a module whose sys.modules entry is None: the same ImportError as a missing package.
WITHOUT_CLIENT = (
    "import sys; sys.modules['tritonclient'] = None; from predictor.cli import main; sys.exit(main(sys.argv[1:]))"
)
PHOTO = REPO_ROOT / "predictor" / "imaging" / "sample_photos" / "coffee.jpg"


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_query_without_the_client_extra_names_it(transport):
    command = [sys.executable, "-c", WITHOUT_CLIENT, "query", str(PHOTO), "--transport", transport]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "image-search query: error: the V2 client (tritonclient) is not installed; "
        "install the extra: pip install 'image-search[client]'"
    ]


def test_the_server_imports_neither_the_client_nor_scikit_image():
    imported = "import sys, predictor.server; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", imported], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    optional = {name.split(".")[0] for name in result.stdout.split()} & {"tritonclient", "gevent", "skimage", "scipy"}
    assert not optional, f"the server imports {sorted(optional)}, which its image does not install"
