"""Where the test servers' programs are: beside the venv's python (which need not be activated), else on PATH."""

import shutil
import sys
from pathlib import Path


def venv_executable(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else shutil.which(name)
