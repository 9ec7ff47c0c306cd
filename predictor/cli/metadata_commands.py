"""`image-search metadata set`: change indexed images' metadata without embedding them again."""

import argparse
import sys
from pathlib import Path


def _metadata_set(args: argparse.Namespace) -> int:
    from predictor.cli.index_commands import open_index
    from predictor.index.metadata_manifests import read_manifest
    from predictor.index.search_options import check_namespace

    namespace = check_namespace(args.namespace)
    manifest = read_manifest(Path(args.metadata))
    index = open_index(args)
    if not index.exists():
        raise ValueError(f"collection {index.collection} does not exist at {index.uri}; index images first")
    index.load()
    root = Path(args.root)
    by_uri = {row.path: str((root / row.path).resolve()) for row in manifest.rows if row.path and not row.id}
    stored = index.ids_by_uri(namespace, sorted(set(by_uri.values())))
    updates: dict[str, dict] = {}
    unmatched = []
    for row in manifest.rows:
        if row.id:
            ids = {row.id}
        else:
            ids = stored.get(by_uri[row.path], set()) if row.path else set()
        if not ids:
            unmatched.append(row)
        for image_id in ids:
            updates[image_id] = row.fields
    changed, missing = index.update_metadata(namespace, updates)
    index.settle()
    unmatched += [row for row in manifest.rows if row.id in missing]
    for row in unmatched:
        print(f"{manifest.source} {row.describe()} matches no image in namespace {namespace!r}", file=sys.stderr)
    print(f"metadata updated {changed}, unchanged {len(updates) - len(missing) - changed}, unmatched {len(unmatched)}")
    index.close()
    return 0


def register(add_command, for_serving: bool) -> None:
    from predictor.cli.index_commands import add_namespace_argument
    from predictor.cli.options import add_milvus_arguments, add_model_arguments

    metadata = add_command("metadata", help="Change indexed images' metadata without embedding them again.")
    metadata.add_argument(
        "action",
        choices=["set"],
        help="set: merge fields from a manifest into the rows it names (null in JSON Lines removes a field).",
    )
    metadata.add_argument(
        "--metadata", required=True, help="JSON Lines or CSV file; rows name images by 'id' or 'path'."
    )
    metadata.add_argument(
        "--root", default=".", help="Directory that the manifest's relative 'path' values start from (default: here)."
    )
    add_namespace_argument(metadata)
    add_milvus_arguments(metadata)
    add_model_arguments(metadata)
    metadata.set_defaults(handler=_metadata_set)
