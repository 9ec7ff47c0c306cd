"""From a registered version's artifact location to a KServe `storageUri`. Pure string rules, no MLflow import.

KServe's storage initializer fetches `s3://`, `gs://`, `hdfs://`, `webhdfs://`, Azure blob `https://` URLs and
`file://` paths, and mounts `pvc://CLAIM/PATH`. MLflow names the same places its own way:

| artifact location                               | storageUri                                             |
|---|---|
| `s3://bucket/p`, `gs://bucket/p`, `hdfs://…`     | the same                                               |
| `wasbs://container@account.blob.core.windows.net/p` | `https://account.blob.core.windows.net/container/p` |
| `/srv/p`, `file:///srv/p`                       | `file:///srv/p` (only a path the initializer can see)  |
| `mlflow-artifacts:/p` (the server proxies it)   | `<the server's --artifacts-destination>/p`, mapped again |

A proxied location names no storage by itself: only the server knows its `--artifacts-destination`, so it must be
given (`s3://bucket/mlartifacts`, or `pvc://claim` when the server keeps artifacts on a claim's volume).
"""

import re
from dataclasses import dataclass
from urllib.parse import urlparse

PASSTHROUGH_SCHEMES = ("s3", "gs", "hdfs", "webhdfs", "pvc")
_AZURE = re.compile(
    r"^(?:wasbs?|abfss?)://(?P<container>[^@/]+)@(?P<account>[^./]+)\.(?:blob|dfs)\.core\.windows\.net/?"
)
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class UnservableLocation(ValueError):
    """KServe cannot fetch the location as it is; the message says what to give instead."""


@dataclass(frozen=True)
class ModelReference:
    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> ModelReference:
    match = _MODEL_URI.match(uri.strip())
    if match is None:
        raise ValueError(f"{uri!r} is not a registry model URI: use models:/NAME@ALIAS or models:/NAME/VERSION")
    return ModelReference(match["name"], match["alias"], match["version"])


def storage_uri(location: str, artifacts_destination: str | None = None) -> str:
    """The `storageUri` that makes KServe's storage initializer fetch the directory at `location`."""
    location = location.rstrip("/")
    scheme = urlparse(location).scheme
    if scheme == "mlflow-artifacts":
        if not artifacts_destination:
            raise UnservableLocation(
                f"{location} is proxied by the MLflow server, and KServe cannot fetch mlflow-artifacts: URIs; give "
                "--artifacts-destination (the server's own --artifacts-destination, e.g. s3://bucket/mlartifacts or "
                "pvc://claim), or copy the package with --download DIR"
            )
        relative = urlparse(location).path.lstrip("/")
        return storage_uri(f"{artifacts_destination.rstrip('/')}/{relative}")
    if scheme in PASSTHROUGH_SCHEMES:
        return location
    azure = _AZURE.match(location)
    if azure:
        path = location[azure.end() :]
        return f"https://{azure['account']}.blob.core.windows.net/{azure['container']}/{path}".rstrip("/")
    if scheme == "file":
        return f"file://{urlparse(location).path}"
    if scheme == "" and location.startswith("/"):
        return f"file://{location}"
    if scheme in ("http", "https"):
        raise UnservableLocation(
            f"{location}: KServe fetches a single file from an http(s) URL, not a directory; copy the package with "
            "--download DIR, or keep artifacts in object storage"
        )
    raise UnservableLocation(
        f"{location}: KServe's storage initializer cannot fetch {scheme or 'relative'} locations; "
        f"it takes {', '.join(s + '://' for s in PASSTHROUGH_SCHEMES)}, Azure blob and file:// URIs"
    )
