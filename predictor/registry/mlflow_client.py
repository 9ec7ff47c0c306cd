"""One way to reach MLflow: a client for a tracking URI, checked up front, whose failures become one-line errors."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

INSTALL_HINT = "pip install 'image-search[mlflow]'"
_PROBE_TIMEOUT_S = 5.0

# MLflow's defaults retry a refused request for about two minutes and print progress bars and run URLs to stdout.
# A user's own setting of any of these wins.
_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


class TrackingError(RuntimeError):
    """MLflow refused, could not be reached, or was handed something it cannot store; the message says which."""


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError(f"MLflow is not installed; install the extra: {INSTALL_HINT}") from None


def connect(uri: str) -> MlflowClient:
    """A client for the tracking server (and its model registry) at `uri`, once the server has answered."""
    require_mlflow()
    if not uri:
        raise TrackingError("no MLflow tracking URI: give --mlflow-uri or set MLFLOW_TRACKING_URI")
    for name, value in _CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if uri.startswith(("http://", "https://")):
        _probe(uri)
    from mlflow import MlflowClient

    # Set after the import, which configures MLflow's loggers; its INFO lines narrate waits the user did not ask about.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _probe(uri: str) -> None:
    """Fail in seconds with the reason, rather than after MLflow's retries with a page of urllib3 text."""
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=_PROBE_TIMEOUT_S)
    except requests.RequestException as error:
        raise TrackingError(f"cannot reach the MLflow tracking server at {uri}: {_connection_reason(error)}") from None


def _connection_reason(error: Exception) -> str:
    text = str(error)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name does not resolve"),
        ("nodename nor servname", "host name does not resolve"),
        ("timed out", f"no answer within {_PROBE_TIMEOUT_S:.0f} s"),
        ("SSL", "TLS handshake failed"),
    ):
        if needle in text:
            return reason
    return type(error).__name__


@contextlib.contextmanager
def mlflow_errors(uri: str, doing: str) -> Iterator[None]:
    """Turn whatever MLflow or the network raises while `doing` into one `TrackingError` line."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except TrackingError:
        raise
    except requests.ConnectionError as error:
        raise TrackingError(f"{doing}: lost the MLflow server at {uri}: {_connection_reason(error)}") from None
    except MlflowException as error:
        raise TrackingError(f"{doing}: MLflow at {uri} said: {_first_line(error.message)}") from None
    except ImportError as error:
        # MLflow reaches S3, GCS or Azure stores through their own SDKs, which its base install leaves out.
        raise TrackingError(
            f"{doing}: the artifact store needs the Python module {error.name!r}, which is not installed "
            "(s3:// needs boto3, gs:// google-cloud-storage, Azure azure-storage-blob)"
        ) from None
    except (OSError, requests.RequestException) as error:
        raise TrackingError(f"{doing}: {_first_line(str(error))}") from None


def _first_line(text: str, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else "no reason given"
    if "Max retries exceeded" in line or "Failed to establish a new connection" in line:
        return "the server stopped answering"
    return line if len(line) <= limit else line[: limit - 1] + "…"
