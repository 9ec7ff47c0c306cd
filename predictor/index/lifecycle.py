"""Which collection is live: list model collections, promote one behind the stable alias, roll back.

The alias is switched with one `alter_alias` call, so readers see either the old collection or the new one, never a
mix. Each promotion records on the new collection which one it replaced; that record is what `rollback` follows.
"""

from dataclasses import dataclass

from predictor.identity import ModelIdentity
from predictor.index.milvus import MilvusAccess
from predictor.index.schema import IDENTITY_PROPERTY, identity_from_property

PREVIOUS_PROPERTY = "image_search.replaced"


class PromotionRefused(RuntimeError):
    """The switch would make things worse (an incomplete index, nothing to roll back to); the message says why."""


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    identity: ModelIdentity | None
    rows: int
    live: bool


def list_collections(access: MilvusAccess, alias: str) -> list[CollectionInfo]:
    """Collections of this alias's family (`<alias>__*`), with their model identity and size."""
    live = access.alias_target(alias)
    infos = []
    for name in sorted(access.list_collections()):
        if not name.startswith(f"{alias}__") and name != live:
            continue
        identity = identity_from_property(access.properties(name).get(IDENTITY_PROPERTY))
        infos.append(CollectionInfo(name, identity, access.count(name), name == live))
    return infos


def find_version(access: MilvusAccess, alias: str, version: str, model_name: str | None = None) -> CollectionInfo:
    matches = [
        info
        for info in list_collections(access, alias)
        if info.identity and info.identity.version == version and model_name in (None, info.identity.name)
    ]
    if not matches:
        raise PromotionRefused(f"no collection of alias {alias!r} was built by model version {version!r}")
    if len(matches) > 1:
        names = ", ".join(info.name for info in matches)
        raise PromotionRefused(f"several collections have version {version!r} ({names}); say which with --model-name")
    return matches[0]


def promote(access: MilvusAccess, alias: str, target: CollectionInfo, force: bool = False) -> str | None:
    """Point `alias` at `target`; returns the collection it pointed at before."""
    previous = access.alias_target(alias)
    if previous == target.name:
        raise PromotionRefused(f"{target.name} is already live behind {alias!r}")
    if previous is not None and not force:
        live_rows = access.count(previous)
        if target.rows != live_rows:
            raise PromotionRefused(
                f"{target.name} holds {target.rows} images but the live {previous} holds {live_rows}; "
                "finish indexing it (image-search index ... --model-dir ...) or promote anyway with --force"
            )
    access.load(target.name)
    if previous is None:
        access.create_alias(target.name, alias)
    else:
        access.set_properties(target.name, {PREVIOUS_PROPERTY: previous})
        access.alter_alias(target.name, alias)
    return previous


def rollback(access: MilvusAccess, alias: str) -> tuple[str, str]:
    """Point `alias` back at the collection the last promotion replaced; returns (from, to)."""
    current = access.alias_target(alias)
    if current is None:
        raise PromotionRefused(f"alias {alias!r} does not exist; nothing to roll back")
    previous = access.properties(current).get(PREVIOUS_PROPERTY)
    if not previous:
        raise PromotionRefused(f"{current} was not promoted over another collection; nothing to roll back to")
    if not access.has_collection(previous):
        raise PromotionRefused(f"{previous}, which {current} replaced, no longer exists")
    access.load(previous)
    access.alter_alias(previous, alias)
    return current, previous
