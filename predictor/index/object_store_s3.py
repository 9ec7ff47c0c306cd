"""S3 and S3-compatible stores (MinIO, SeaweedFS, Ceph...) through boto3, which reads the standard AWS environment.

botocore's `standard` retry mode (unless `AWS_RETRY_MODE` says otherwise) retries throttling, 5xx and dropped
connections with jittered exponential backoff, `AWS_MAX_ATTEMPTS` times in all.
"""

import logging
import os
from collections.abc import Iterator

from predictor.index.object_store import ObjectGone, ObjectStoreError, ObjectUri, StoredObject

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "403"}
_MISSING_BUCKET = {"NoSuchBucket"}
_MISSING_KEY = {"NoSuchKey", "404"}
# botocore says at INFO where it found credentials, once per client: noise in every command's output.
logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
logging.getLogger("botocore.configprovider").setLevel(logging.WARNING)


class S3Store:
    def __init__(self, uri: ObjectUri, workers: int = 16) -> None:
        import boto3
        from botocore.config import Config

        self.uri = uri
        config = Config(
            retries={"mode": os.environ.get("AWS_RETRY_MODE", "standard")},
            max_pool_connections=max(10, workers + 4),
            connect_timeout=10,
            read_timeout=60,
        )
        self.client = boto3.session.Session().client("s3", config=config)
        self.endpoint = self.client.meta.endpoint_url

    def list(self) -> Iterator[StoredObject]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.uri.bucket, Prefix=self.uri.prefix)
        with self._errors(str(self.uri)):
            for page in pages:
                for entry in page.get("Contents", ()):
                    if not entry["Key"].endswith("/"):
                        yield StoredObject(entry["Key"], int(entry["Size"]), entry["ETag"].strip('"'))

    def read(self, key: str, max_bytes: int) -> bytes:
        with self._errors(self.uri.of(key), key):
            answer = self.client.get_object(Bucket=self.uri.bucket, Key=key)
            with answer["Body"] as body:
                return body.read(max_bytes + 1)

    def _errors(self, where: str, key: str | None = None):  # noqa: ANN202 - a context manager
        return _S3Errors(where, self.endpoint, key)


class _S3Errors:
    """Turns boto's exceptions into one line that names the URI, the endpoint and what to check."""

    def __init__(self, where: str, endpoint: str, key: str | None) -> None:
        self.where, self.endpoint, self.key = where, endpoint, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> None:  # noqa: ANN001
        if error is None:
            return
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            raise ObjectStoreError(
                f"{self.where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or run with a web identity (IRSA) or an instance role"
            ) from None
        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            message = error.response.get("Error", {}).get("Message", "") or str(error)
            if code in _MISSING_BUCKET:
                raise ObjectStoreError(f"{self.where}: bucket does not exist at {self.endpoint}") from None
            if code in _MISSING_KEY and self.key is not None:
                raise ObjectGone(f"{self.where}: the object is gone") from None
            if code in _DENIED:
                raise ObjectStoreError(
                    f"{self.where}: access denied ({code}: {message}); check the credentials and the bucket policy"
                ) from None
            raise ObjectStoreError(f"{self.where}: {code or 'error'}: {message}") from None
        if isinstance(error, BotoCoreError):
            raise ObjectStoreError(f"{self.where}: cannot reach the S3 endpoint {self.endpoint}: {error}") from None
        return
