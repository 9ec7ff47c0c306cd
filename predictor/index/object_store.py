"""Catalogues in object stores: `s3://bucket/prefix` and `gs://bucket/prefix`, listed and read through each cloud's SDK.

The SDKs (boto3, google-cloud-storage) are used as they are, so credentials, endpoint and region come from each cloud's
standard environment and default chain: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_ENDPOINT_URL` (S3-compatible stores), `AWS_REGION`, web identity (IRSA) in a pod; `GOOGLE_APPLICATION_CREDENTIALS`
or workload identity for GCS. Throttling and 5xx answers are retried with backoff by the SDKs' own retry policies.

Every failure that stops a run (no such bucket, access denied, no credentials, the store unreachable) is an
`ObjectStoreError` whose message names the URI and what to do; an object that vanished between listing and reading is
`ObjectGone`, which a run reports and skips.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

__all__ = [
    "SCHEMES",
    "ObjectGone",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectUri",
    "StoredObject",
    "is_object_uri",
    "open_store",
    "parse_object_uri",
]

SCHEMES = ("s3", "gs")


class ObjectStoreError(RuntimeError):
    """The store cannot be listed or read as asked; the message says which URI and why."""


class ObjectGone(ObjectStoreError):
    """One object was listed but is no longer there (deleted or replaced in between)."""


@dataclass(frozen=True)
class ObjectUri:
    scheme: str
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}"

    def of(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"


@dataclass(frozen=True)
class StoredObject:
    """One listed object: its key in the bucket, its size, and what changes when its content is replaced."""

    key: str
    size: int
    version: str


class ObjectStore(Protocol):
    uri: ObjectUri

    def list(self) -> Iterator[StoredObject]:
        """Every object under the prefix, page by page."""

    def read(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes; at most `max_bytes` + 1 of them, so a caller can tell an oversized object."""


def is_object_uri(text: str) -> bool:
    return urlsplit(text).scheme in SCHEMES and "://" in text


def parse_object_uri(text: str) -> ObjectUri:
    """`s3://bucket/prefix` -> its parts; a prefix that names a folder is matched as that folder (`a/b` is `a/b/`)."""
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise ValueError(f"{text}: an object store source is s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]")
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return ObjectUri(parts.scheme, parts.netloc, prefix)


def open_store(uri: ObjectUri, workers: int = 16) -> ObjectStore:
    """A client for `uri`'s cloud, sized for `workers` concurrent reads."""
    if uri.scheme == "s3":
        from predictor.index.object_store_s3 import S3Store

        return S3Store(uri, workers)
    from predictor.index.object_store_gcs import GcsStore

    return GcsStore(uri, workers)
