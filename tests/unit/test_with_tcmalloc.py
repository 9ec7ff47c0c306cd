"""hack/with-tcmalloc.sh gives a command the allocator the image serves with, and the benchmark record says which."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "hack" / "with-tcmalloc.sh"
ALLOCATOR = "from benchmarks.run import allocator; print(allocator())"


def tcmalloc_installed() -> bool:
    listed = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    return "libtcmalloc_minimal.so.4" in listed


def allocator_of(*command: str) -> str:
    result = subprocess.run(
        [*command, sys.executable, "-c", ALLOCATOR], capture_output=True, text=True, cwd=REPO, timeout=120, check=True
    )
    return result.stdout.strip()


NOT_INSTALLED = "libtcmalloc-minimal4 is not installed (hack/tools/tcmalloc.sh installs it, make tools)"


@pytest.mark.skipif(not tcmalloc_installed(), reason=NOT_INSTALLED)
def test_the_wrapper_preloads_tcmalloc_and_the_benchmark_sees_it():
    assert allocator_of(str(WRAPPER)) == "tcmalloc"
    assert allocator_of() == "glibc malloc"
