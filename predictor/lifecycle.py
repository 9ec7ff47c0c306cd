"""Which collection is live: list model collections, promote one behind the stable alias, roll back.

The alias is switched with one `alter_alias` call, so readers see either the old collection or the new one, never a
mix. Each promotion records on the new collection which one it replaced; that record is what `rollback` follows.
"""

from dataclasses import dataclass

from pymilvus import MilvusClient, MilvusException

from predictor.identity import ModelIdentity
from predictor.index import IDENTITY_PROPERTY, IndexUnavailable, identity_from_property

PREVIOUS_PROPERTY = "image_search.replaced"


class PromotionRefused(RuntimeError):
    """The switch would make things worse (an incomplete index, nothing to roll back to); the message says why."""


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    identity: ModelIdentity | None
    rows: int
    live: bool


def _call(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except MilvusException as error:
        raise IndexUnavailable(f"Milvus {what} failed: {error}") from None


def _properties(client: MilvusClient, name: str) -> dict:
    return _call("describe", client.describe_collection, name).get("properties", {})


def alias_target(client: MilvusClient, alias: str) -> str | None:
    if alias not in _call("list_aliases", client.list_aliases).get("aliases", []):
        return None
    return _call("describe_alias", client.describe_alias, alias)["collection_name"]


def row_count(client: MilvusClient, name: str) -> int:
    return int(_call("count", client.query, name, filter="", output_fields=["count(*)"])[0]["count(*)"])


def list_collections(client: MilvusClient, alias: str) -> list[CollectionInfo]:
    """Collections of this alias's family (`<alias>__*`), with their model identity and size."""
    live = alias_target(client, alias)
    infos = []
    for name in sorted(_call("list_collections", client.list_collections)):
        if not name.startswith(f"{alias}__") and name != live:
            continue
        identity = identity_from_property(_properties(client, name).get(IDENTITY_PROPERTY))
        infos.append(CollectionInfo(name, identity, row_count(client, name), name == live))
    return infos


def find_version(client: MilvusClient, alias: str, version: str, model_name: str | None = None) -> CollectionInfo:
    matches = [
        info
        for info in list_collections(client, alias)
        if info.identity and info.identity.version == version and model_name in (None, info.identity.name)
    ]
    if not matches:
        raise PromotionRefused(f"no collection of alias {alias!r} was built by model version {version!r}")
    if len(matches) > 1:
        names = ", ".join(info.name for info in matches)
        raise PromotionRefused(f"several collections have version {version!r} ({names}); say which with --model-name")
    return matches[0]


def promote(client: MilvusClient, alias: str, target: CollectionInfo, force: bool = False) -> str | None:
    """Point `alias` at `target`; returns the collection it pointed at before."""
    previous = alias_target(client, alias)
    if previous == target.name:
        raise PromotionRefused(f"{target.name} is already live behind {alias!r}")
    if previous is not None and not force:
        live_rows = row_count(client, previous)
        if target.rows != live_rows:
            raise PromotionRefused(
                f"{target.name} holds {target.rows} images but the live {previous} holds {live_rows}; "
                "finish indexing it (image-search index ... --model-dir ...) or promote anyway with --force"
            )
    _call("load", client.load_collection, target.name)
    if previous is None:
        _call("create_alias", client.create_alias, target.name, alias)
    else:
        _call(
            "alter_collection_properties",
            client.alter_collection_properties,
            target.name,
            properties={PREVIOUS_PROPERTY: previous},
        )
        _call("alter_alias", client.alter_alias, target.name, alias)
    return previous


def rollback(client: MilvusClient, alias: str) -> tuple[str, str]:
    """Point `alias` back at the collection the last promotion replaced; returns (from, to)."""
    current = alias_target(client, alias)
    if current is None:
        raise PromotionRefused(f"alias {alias!r} does not exist; nothing to roll back")
    previous = _properties(client, current).get(PREVIOUS_PROPERTY)
    if not previous:
        raise PromotionRefused(f"{current} was not promoted over another collection; nothing to roll back to")
    if not _call("has_collection", client.has_collection, previous):
        raise PromotionRefused(f"{previous}, which {current} replaced, no longer exists")
    _call("load", client.load_collection, previous)
    _call("alter_alias", client.alter_alias, previous, alias)
    return current, previous
