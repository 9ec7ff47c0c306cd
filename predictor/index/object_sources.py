"""Images in an object-store prefix, as `index` and `sync` see them: listed once, read only when they must be embedded.

An object's row carries its listing version (the S3 ETag, the GCS generation) in the metadata field `object_version`,
so a re-run can tell from the listing alone which objects are already indexed as they are now.
"""

import posixpath
from dataclasses import dataclass, field

from predictor.imaging.image_files import IMAGE_SUFFIXES
from predictor.index.object_store import ObjectStore, ObjectUri, StoredObject, open_store, parse_object_uri

__all__ = ["VERSION_FIELD", "ObjectImage", "ObjectListing", "list_objects"]

VERSION_FIELD = "object_version"


@dataclass(frozen=True)
class ObjectImage:
    """One listed object; `name` is its key relative to the prefix (what a manifest's `path` names)."""

    store: ObjectStore = field(repr=False, compare=False)
    object: StoredObject
    name: str

    @property
    def uri(self) -> str:
        return self.store.uri.of(self.object.key)

    @property
    def filename(self) -> str:
        return posixpath.basename(self.object.key)

    @property
    def version(self) -> str:
        return self.object.version

    def read(self, max_bytes: int) -> bytes:
        return self.store.read(self.object.key, max_bytes)


@dataclass(frozen=True)
class ObjectListing:
    source: ObjectUri
    images: list[ObjectImage]
    # Objects whose name says they are not images (a manifest, a README, a folder marker's siblings).
    not_images: list[str]


def list_objects(source: str, workers: int = 16) -> ObjectListing:
    """List the whole prefix before anything is read or written, so a missing bucket, denied access or missing
    credentials stop a run that has done nothing yet."""
    uri = parse_object_uri(source)
    store = open_store(uri, workers)
    images, others = [], []
    for stored in store.list():
        name = stored.key[len(uri.prefix) :]
        if posixpath.splitext(stored.key)[1].lower() in IMAGE_SUFFIXES:
            images.append(ObjectImage(store, stored, name))
        else:
            others.append(uri.of(stored.key))
    images.sort(key=lambda image: image.object.key)
    return ObjectListing(uri, images, others)
