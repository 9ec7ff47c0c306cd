"""MLflow is an optional extra: without it the CLI works, and the commands that need it say how to install it."""

import subprocess
import sys

from harness.predictor_server import REPO_ROOT

# Python refuses to import a module whose sys.modules entry is None: the same ImportError as a missing package.
WITHOUT_MLFLOW = (
    "import sys; sys.modules['mlflow'] = None; from predictor.cli import main; sys.exit(main(sys.argv[1:]))"
)


def cli_without_mlflow(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", WITHOUT_MLFLOW, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def test_registry_commands_without_mlflow_name_the_extra(tmp_path):
    for args in (
        ["register", "--model-dir", str(tmp_path), "--mlflow-uri", "http://127.0.0.1:1"],
        ["registry", "promote", "--alias", "champion", "--version", "1", "--mlflow-uri", "http://127.0.0.1:1"],
        ["registry", "resolve", "models:/image-search@champion", "--mlflow-uri", "http://127.0.0.1:1"],
    ):
        result = cli_without_mlflow(*args)
        assert result.returncode == 2, result.stderr
        assert "MLflow is not installed; install the extra: pip install 'image-search[mlflow]'" in result.stderr
        assert "Traceback" not in result.stderr


def test_eval_offers_tracking_without_mlflow_installed():
    result = cli_without_mlflow("eval", "--help")
    assert result.returncode == 0 and "--mlflow-uri" in result.stdout
