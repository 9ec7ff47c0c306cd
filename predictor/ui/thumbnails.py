"""Thumbnails of indexed images: where a stored uri can be shown from, small JPEG renditions, and a bounded cache.

A thumbnail is only ever asked for by an image's id; the id's row in the index gives its uri, so a request can never
name a file. A uri is shown in one of three ways:

- it starts with a configured prefix (`--thumbnail-base-url PREFIX=URL`): the browser is sent to URL plus the rest;
- it is a local path (or `file://`) this server can read: the file is decoded under the same limits as a query
  image, shrunk to fit `--thumbnail-size` and re-encoded as JPEG, so no stored byte is ever served as it is;
- an object in a store (`s3://`, `gs://`): this server reads it with its own credentials (the cloud's standard
  environment, as `image-search index` does) and renders it as a local file, under the same limits and cache;
- anything else (`https://`, ...) has no thumbnail here, and the page shows a placeholder or link.
"""

import asyncio
import concurrent.futures
import hashlib
import io
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from PIL import Image

from predictor.errors import ThumbnailNotFound
from predictor.imaging.decoding import ImageLimits, InvalidImage, Preprocessing, decode_image
from predictor.index.collection import StoredImage
from predictor.index.object_sources import VERSION_FIELD
from predictor.index.object_store import (
    ObjectStore,
    ObjectStoreError,
    ObjectUri,
    is_object_uri,
    open_store,
    parse_object_uri,
)
from predictor.ui.settings import BaseUrl, UiSettings

__all__ = [
    "Elsewhere",
    "InStore",
    "LocalFile",
    "Thumbnail",
    "ThumbnailCache",
    "Thumbnails",
    "Unreadable",
    "locate",
    "render_bytes",
    "render_file",
]

JPEG_QUALITY = 85
# Characters a URL path may carry as they are; anything else in a stored uri (spaces, '?', '#', '%') is escaped.
_URL_PATH_SAFE = "/:@!$&'()*+,;=-._~"
T = TypeVar("T")


@dataclass(frozen=True)
class LocalFile:
    path: Path


@dataclass(frozen=True)
class InStore:
    uri: str


@dataclass(frozen=True)
class Elsewhere:
    url: str


@dataclass(frozen=True)
class Unreadable:
    reason: str


@dataclass(frozen=True)
class Thumbnail:
    body: bytes
    etag: str
    content_type: str = "image/jpeg"


def locate(uri: str, base_urls: tuple[BaseUrl, ...]) -> LocalFile | InStore | Elsewhere | Unreadable:
    """Where the image stored as `uri` can be shown from; `base_urls` longest prefix first, as UiSettings keeps them."""
    for base in base_urls:
        if uri.startswith(base.prefix):
            return Elsewhere(base.url + quote(uri[len(base.prefix) :], safe=_URL_PATH_SAFE))
    if not uri:
        return Unreadable("the index holds no uri for this image")
    if "://" not in uri:
        return LocalFile(Path(uri))
    parts = urlsplit(uri)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return LocalFile(Path(unquote(parts.path)))
    if is_object_uri(uri):
        return InStore(uri)
    return Unreadable(
        f"this server cannot read {parts.scheme}:// images; map them to a URL with --thumbnail-base-url PREFIX=URL"
    )


def render_file(path: Path, size: int, limits: ImageLimits) -> bytes:
    """A JPEG of the image file at `path` that fits a `size` square; InvalidImage if it is not an acceptable image."""
    with path.open("rb") as stored:
        data = stored.read(limits.max_bytes + 1)
    return render_bytes(data, size, limits)


def render_bytes(data: bytes, size: int, limits: ImageLimits) -> bytes:
    """A JPEG of the image in `data` that fits a `size` square; InvalidImage if it is not an acceptable image."""
    # Letterboxing to the thumbnail square lets a large JPEG decode at a reduced scale, as query images do.
    decoded = decode_image(data, limits, Preprocessing(mode="letterbox", input_size=size))
    image = decoded.image
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


class ThumbnailCache:
    """The most recently served thumbnails, at most `max_bytes` of them in all; the least recently used go first.

    Used from the event loop only, so it needs no lock.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, Thumbnail] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Thumbnail | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: str, thumbnail: Thumbnail) -> None:
        size = len(thumbnail.body)
        if size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = thumbnail
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted.body)


def _file_version(path: Path) -> str:
    """The file and what changes when it does; refuses anything but a regular file (a FIFO would block its reader)."""
    try:
        status = path.stat()
        where = path.resolve()
    except OSError as error:
        raise ThumbnailNotFound(f"the image file of this id cannot be read: {error.strerror or error}") from None
    if not stat.S_ISREG(status.st_mode):
        raise ThumbnailNotFound("the uri of this id is not a regular file")
    return f"{where}\0{status.st_mtime_ns}:{status.st_size}"


class Thumbnails:
    """Thumbnails of stored images, rendered in `executor` (never on the event loop) and cached."""

    def __init__(self, settings: UiSettings, limits: ImageLimits, executor: concurrent.futures.Executor) -> None:
        self.settings = settings
        self.limits = limits
        self.executor = executor
        self.cache = ThumbnailCache(settings.thumbnail_cache_bytes)
        # One client per bucket, made on the first thumbnail from it; clients are thread-safe and pool connections.
        self._stores: dict[ObjectUri, ObjectStore] = {}
        self._stores_lock = threading.Lock()

    def locate(self, image: StoredImage) -> LocalFile | InStore | Elsewhere | Unreadable:
        return locate(image.uri, self.settings.base_urls)

    def object_etag(self, image: StoredImage) -> str:
        """An object's thumbnail changes with the object: its row records the version it was indexed at."""
        key = f"{image.uri}\0{image.metadata.get(VERSION_FIELD, image.id)}\0{image.id}\0{self.settings.thumbnail_size}"
        return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'

    async def render_object(self, where: InStore, etag: str) -> Thumbnail:
        cached = self.cache.get(etag)
        if cached is not None:
            return cached
        try:
            body = await self._in_executor(self._render_object, where.uri)
        except InvalidImage as error:
            raise ThumbnailNotFound(f"the object of this id cannot be shown: {error}") from None
        except ObjectStoreError as error:
            raise ThumbnailNotFound(f"the object of this id cannot be read: {error}") from None
        thumbnail = Thumbnail(body, etag)
        self.cache.put(etag, thumbnail)
        return thumbnail

    def _render_object(self, uri: str) -> bytes:
        parsed = parse_object_uri(uri)
        key = parsed.prefix.rstrip("/")
        bucket = ObjectUri(parsed.scheme, parsed.bucket, "")
        with self._stores_lock:
            store = self._stores.get(bucket)
            if store is None:
                store = self._stores[bucket] = open_store(bucket)
        return render_bytes(store.read(key, self.limits.max_bytes), self.settings.thumbnail_size, self.limits)

    async def etag(self, file: LocalFile) -> str:
        """The ETag the thumbnail of `file` has now: it changes with the file and with the thumbnail size."""
        version = await self._in_executor(_file_version, file.path)
        key = f"{version}\0{self.settings.thumbnail_size}"
        return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'

    async def render(self, file: LocalFile, etag: str) -> Thumbnail:
        cached = self.cache.get(etag)
        if cached is not None:
            return cached
        try:
            body = await self._in_executor(render_file, file.path, self.settings.thumbnail_size, self.limits)
        except InvalidImage as error:
            raise ThumbnailNotFound(f"the image file of this id cannot be shown: {error}") from None
        except OSError as error:
            raise ThumbnailNotFound(f"the image file of this id cannot be read: {error.strerror or error}") from None
        thumbnail = Thumbnail(body, etag)
        self.cache.put(etag, thumbnail)
        return thumbnail

    async def _in_executor(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)
