"""Google Cloud Storage through google-cloud-storage, with Application Default Credentials
(`GOOGLE_APPLICATION_CREDENTIALS`, workload identity in GKE, gcloud's login on a laptop).

Reads use the library's default retry, which backs off exponentially on 429, 5xx and dropped connections.
"""

from collections.abc import Iterator

from predictor.index.object_store import ObjectGone, ObjectStoreError, ObjectUri, StoredObject


class GcsStore:
    def __init__(self, uri: ObjectUri, workers: int = 16) -> None:
        self.uri = uri
        self.workers = workers
        self._client = None

    @property
    def client(self):  # noqa: ANN201 - google-cloud-storage is imported lazily
        if self._client is None:
            import google.auth.exceptions
            from google.cloud import storage

            try:
                self._client = storage.Client()
            except google.auth.exceptions.DefaultCredentialsError as error:
                raise ObjectStoreError(
                    f"{self.uri}: no Google Cloud credentials found; set GOOGLE_APPLICATION_CREDENTIALS or run with "
                    f"workload identity ({error})"
                ) from None
        return self._client

    def list(self) -> Iterator[StoredObject]:
        with _GcsErrors(str(self.uri)):
            for blob in self.client.list_blobs(self.uri.bucket, prefix=self.uri.prefix):
                if not blob.name.endswith("/"):
                    # The generation changes whenever the object's content is replaced, and only then.
                    yield StoredObject(blob.name, int(blob.size or 0), str(blob.generation))

    def read(self, key: str, max_bytes: int) -> bytes:
        with _GcsErrors(self.uri.of(key), key):
            blob = self.client.bucket(self.uri.bucket).blob(key)
            return blob.download_as_bytes(start=0, end=max_bytes)


class _GcsErrors:
    def __init__(self, where: str, key: str | None = None) -> None:
        self.where, self.key = where, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> None:  # noqa: ANN001
        if error is None or isinstance(error, ObjectStoreError):
            return
        import google.auth.exceptions
        from google.api_core import exceptions

        if isinstance(error, exceptions.NotFound):
            if self.key is not None:
                raise ObjectGone(f"{self.where}: the object is gone") from None
            raise ObjectStoreError(f"{self.where}: bucket does not exist") from None
        if isinstance(error, exceptions.Forbidden | exceptions.Unauthorized):
            raise ObjectStoreError(f"{self.where}: access denied ({error.message}); check the credentials") from None
        if isinstance(error, google.auth.exceptions.GoogleAuthError):
            raise ObjectStoreError(f"{self.where}: cannot authenticate to Google Cloud: {error}") from None
        if isinstance(error, exceptions.GoogleAPIError | OSError):
            raise ObjectStoreError(f"{self.where}: cannot read from Google Cloud Storage: {error}") from None
        return
