"""`image-search collections`, `promote` and `rollback`: which model version's collection is live."""

import argparse


def _access(args: argparse.Namespace):  # noqa: ANN202 - lazy imports keep the CLI fast
    from predictor.cli.options import check_lite_file_exists, milvus_settings
    from predictor.index.milvus import MilvusAccess

    milvus = milvus_settings(args)
    check_lite_file_exists(milvus.uri)
    return MilvusAccess.of(milvus), milvus


def _collections(args: argparse.Namespace) -> int:
    from predictor.index.lifecycle import list_collections

    access, milvus = _access(args)
    infos = list_collections(access, milvus.collection)
    if not infos:
        print(f"no collections for alias {milvus.collection!r} at {milvus.uri}")
        return 0
    print(f"  {'':1} {'collection':<48} {'model':<32} {'dim':>5} {'images':>8}")
    for info in infos:
        identity = info.identity
        model = f"{identity.name}:{identity.version}" if identity else "unknown"
        dimension = identity.dimension if identity else "?"
        print(f"  {'*' if info.live else ' '} {info.name:<48} {model:<32} {dimension:>5} {info.rows:>8}")
    print(f"\n  * = where alias {milvus.collection!r} points")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from predictor.index.lifecycle import find_version, promote

    access, milvus = _access(args)
    target = find_version(access, milvus.collection, args.to, args.model_name)
    previous = promote(access, milvus.collection, target, force=args.force)
    print(f"{milvus.collection} -> {target.name} ({target.rows} images); was {previous or 'nothing'}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from predictor.index.lifecycle import rollback

    access, milvus = _access(args)
    current, previous = rollback(access, milvus.collection)
    print(f"{milvus.collection} -> {previous}; was {current}")
    return 0


def register(add_command, for_serving: bool) -> None:
    from predictor.cli.options import add_milvus_arguments

    collections = add_command("collections", help="List model collections, their size and the live one.")
    add_milvus_arguments(collections)
    collections.set_defaults(handler=_collections)

    promote = add_command("promote", help="Point the stable alias at a model version's collection.")
    promote.add_argument("--to", required=True, help="Model version whose collection becomes live.")
    promote.add_argument("--model-name", help="Model name, when several models have that version.")
    promote.add_argument("--force", action="store_true", help="Promote even if it holds fewer images than live.")
    add_milvus_arguments(promote)
    promote.set_defaults(handler=_promote)

    rollback = add_command("rollback", help="Point the alias back at the collection it replaced.")
    add_milvus_arguments(rollback)
    rollback.set_defaults(handler=_rollback)
