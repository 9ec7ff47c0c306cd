"""`image-search index` and `delete`: what the model's collection holds."""

import argparse
import os
import sys
from pathlib import Path

from predictor.index.search_options import DEFAULT_NAMESPACE


def _namespace(args: argparse.Namespace) -> str:
    from predictor.index.search_options import check_namespace

    return check_namespace(args.namespace)


def open_index(args: argparse.Namespace, spec=None, *, creates: bool = False):  # noqa: ANN001, ANN201 - lazy imports
    """The collection of the model in --model-dir (or `spec`) at --milvus-uri / --collection; a command that
    `creates` it may name a milvus-lite file that is not there yet."""
    from predictor.cli.options import check_lite_file_exists, milvus_settings
    from predictor.embedding.model_package import resolve_spec
    from predictor.index.collection import ImageIndex
    from predictor.index.milvus import MilvusAccess

    milvus = milvus_settings(args)
    if not creates:
        check_lite_file_exists(milvus.uri)
    identity = (spec or resolve_spec(args.model_dir)).identity
    return ImageIndex.for_model(
        MilvusAccess.of(milvus),
        milvus.collection,
        identity,
        vector_index=milvus.index,
        filter_columns=milvus.filter_columns,
    )


def _index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from predictor.embedding.model_package import resolve_spec
    from predictor.index.ingestion import index_images, unmatched_rows
    from predictor.index.metadata_manifests import read_manifest
    from predictor.index.source_listing import already_indexed, list_sources

    check_batch_and_shards(args)
    namespace = _namespace(args)
    # A malformed manifest stops the run here, before anything is embedded or written.
    manifest = read_manifest(Path(args.metadata)) if args.metadata else None
    # So does a source that cannot be listed (no such folder or bucket, access denied, no credentials).
    listing = list_sources(args.sources, args.shard_index, args.shard_count, args.fetch_workers)
    for uri in listing.not_images:
        print(f"skipped {uri}: not an image (by its name)", file=sys.stderr)
    spec = resolve_spec(args.model_dir)
    index = open_index(args, spec, creates=True)
    # Milvus before the network: an unreachable or foreign collection is reported before seconds of model loading.
    index.ensure_collection()
    index.check_writable(namespace)
    known = already_indexed(index, namespace, listing, manifest)
    images = known.pending
    from predictor.embedding.backbone import Backbone
    from predictor.embedding.compilation import for_batch_job

    backbone = Backbone(spec, args.device, args.precision, compile_mode=for_batch_job(args.compile, len(images)))
    if images:
        backbone.load()
    with tqdm(total=len(images), unit="img", desc=f"indexing into {index.base}", file=sys.stderr) as bar:
        report = index_images(
            images,
            backbone,
            index,
            namespace,
            manifest,
            batch_size=args.batch_size,
            progress=bar.update,
            fetch_workers=args.fetch_workers,
        )
    report.skipped += known.skipped
    report.metadata_updated += known.metadata_updated
    report.matched_rows |= known.matched_rows
    everything = listing.everything
    if manifest:
        report.unmatched = unmatched_rows(manifest, report.matched_rows, everything)
    for path, reason in report.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if manifest:
        for row in report.unmatched:
            print(f"{manifest.source} {row.describe()} matched no file", file=sys.stderr)
    # Sealed, the new rows get the collection's index; a Milvus server searches unsealed rows with its interim index,
    # whose fixed effort loses filtered hits (docs/search-index.md).
    index.access.call("flush", "flush", index.collection, collection=index.collection)
    index.settle()
    where = f"namespace {namespace!r} of collection {index.collection}"
    print(f"{report.summary()} ({where} now holds {index.count(namespace)} images)")
    index.close()
    return 0


def check_batch_and_shards(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.fetch_workers < 1:
        raise ValueError(f"--fetch-workers must be at least 1, got {args.fetch_workers}")
    if args.shard_count < 1 or not 0 <= args.shard_index < args.shard_count:
        raise ValueError(f"--shard-index must be in [0, --shard-count); got {args.shard_index} of {args.shard_count}")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """What `index` and `sync` share: batching, reading ahead, and the shard this worker takes."""
    from predictor import environment

    parser.add_argument("--batch-size", type=int, default=32, help="Images embedded per forward pass.")
    parser.add_argument(
        "--fetch-workers",
        type=int,
        default=16,
        help="Images read at once ahead of the model (object stores serve many reads in parallel).",
    )
    parser.add_argument(
        "--shard-index",
        type=int,
        default=os.environ.get(environment.SHARD_INDEX, "0"),
        help="This worker's shard, 0-based (Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX).",
    )
    parser.add_argument(
        "--shard-count",
        type=int,
        default=1,
        help="How many shards split the sources, by a stable hash of each file's path or object's URI.",
    )


def _delete(args: argparse.Namespace) -> int:
    if not args.id and not args.source:
        raise ValueError("say what to delete: --id ID and/or --source PATH")
    namespace = _namespace(args)
    index = open_index(args)
    if not index.exists():
        raise ValueError(f"collection {index.collection} does not exist at {index.uri}")
    index.load()
    ids = list(args.id)
    for source in args.source:
        ids += index.ids_under(namespace, str(Path(source).resolve()))
    deleted = index.delete(namespace, ids)
    index.settle()
    where = f"namespace {namespace!r} of collection {index.collection}"
    print(f"deleted {deleted} ({where} now holds {index.count(namespace)} images)")
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from predictor.index.reindexing import rebuild_index

    index = open_index(args)
    wanted = set(index.filter_columns)
    if wanted and (not index.exists() or wanted != set(index.layout.filter_columns)):
        return _add_filter_columns(index)
    if not index.exists():
        raise ValueError(f"collection {index.collection} does not exist at {index.uri}")
    index.check_identity()
    print(f"rebuilding the index of {index.collection} as {index.vector_index.describe()}", file=sys.stderr)
    rebuilt = rebuild_index(index.access, index.collection, index.vector_index)
    print(
        f"rebuilt the index of {rebuilt.collection} ({rebuilt.rows} rows) in {rebuilt.seconds:.1f} s: "
        f"{rebuilt.before.describe()} -> {rebuilt.after.describe()}; restart the servers that search it"
    )
    index.close()
    return 0


def _add_filter_columns(index) -> int:  # noqa: ANN001 - an ImageIndex, imported lazily
    from tqdm import tqdm

    from predictor.index.column_migration import add_filter_columns
    from predictor.index.filter_columns import describe

    if index.exists():
        index.check_identity()
    columns = describe(index.filter_columns)
    print(f"rebuilding {index.collection} with filter columns {columns}, from its stored rows", file=sys.stderr)
    with tqdm(desc="rows copied", unit="row", file=sys.stderr) as bar:
        migrated = add_filter_columns(
            index, index.filter_columns, index.vector_index, progress=lambda copied: bar.update(copied - bar.n)
        )
    print(
        f"rebuilt {migrated.collection} ({migrated.rows} rows) with filter columns {columns} and index "
        f"{index.vector_index.describe()} in {migrated.seconds:.1f} s; restart the servers that search it"
    )
    index.close()
    return 0


def _duplicates(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from predictor.cli.output_files import check_writable
    from predictor.index.duplicates import check_mark_field, find_clusters, mark_clusters
    from predictor.index.filters import validate_filter

    if not 0.0 < args.threshold <= 1.0:
        raise ValueError(f"--threshold must be a similarity in (0, 1], got {args.threshold}")
    # Both are used after the search, which takes 40 minutes at 200,000 rows: a typo should not cost that.
    check_writable(args.out, "--out")
    if args.mark:
        check_mark_field(args.mark)
    namespace = _namespace(args)
    expression = validate_filter(args.filter) if args.filter else None
    index = open_index(args)
    if not index.exists():
        raise ValueError(f"collection {index.collection} does not exist at {index.uri}")
    index.check_identity()
    index.load()
    total = index.count(namespace)
    if not index.layout.signatures:
        print(
            f"{index.collection} stores no copy signatures (it was made before them): pairs are scored by the "
            "embedding alone, which finds fewer copies; index the images into a new collection to get them",
            file=sys.stderr,
        )
    with tqdm(total=total, unit="img", desc=f"duplicates in {index.base}", file=sys.stderr) as bar:
        clusters = find_clusters(index, namespace, expression, args.threshold, progress=bar.update)
    with open(args.out, "w", encoding="utf-8") as out:
        for cluster in clusters:
            out.write(json.dumps(cluster.line(), ensure_ascii=False) + "\n")
    members = sum(len(cluster.ids) for cluster in clusters)
    print(
        f"{len(clusters)} clusters of {members} images at threshold {args.threshold} written to {args.out}",
        file=sys.stderr,
    )
    if args.mark:
        changed = mark_clusters(index, namespace, clusters, args.mark, expression)
        index.settle()
        print(f"marked {changed} images: metadata[{args.mark!r}] holds each member's cluster id", file=sys.stderr)
    index.close()
    return 0


def add_namespace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        help=f"Namespace (tenant) the rows belong to; default {DEFAULT_NAMESPACE!r}. The same image in two namespaces "
        "is two rows.",
    )


def register(add_command, for_serving: bool) -> None:
    from predictor.cli.options import add_milvus_arguments, add_model_arguments

    index = add_command("index", help="Embed image files and add them to the Milvus collection.")
    index.add_argument(
        "sources",
        nargs="+",
        help="Directories (searched recursively), text files of paths, and/or object-store prefixes "
        "(s3://BUCKET/PREFIX, gs://BUCKET/PREFIX; credentials from the cloud's standard environment).",
    )
    index.add_argument(
        "--metadata",
        help="JSON Lines or CSV file of metadata fields per image, naming each image by 'path' (relative to its "
        "SOURCE directory or prefix) or 'id'; a row with both gives the image that id.",
    )
    add_namespace_argument(index)
    add_milvus_arguments(index)
    add_model_arguments(index)
    add_source_arguments(index)
    index.set_defaults(handler=_index)

    delete = add_command("delete", help="Remove images from the model's collection.")
    delete.add_argument("--id", action="append", default=[], help="Image id to delete (repeatable).")
    delete.add_argument("--source", action="append", default=[], help="File or directory whose images to delete.")
    add_namespace_argument(delete)
    add_milvus_arguments(delete)
    add_model_arguments(delete)
    delete.set_defaults(handler=_delete)

    reindex = add_command(
        "reindex",
        help="Rebuild the vector index of the model's collection in place with --index-type/--index-params (default: "
        "the measured default), from the stored vectors; nothing is embedded again. With --filter-columns other than "
        "the collection's, the collection is made again with those columns and that index, its rows copied out and "
        "back. Searches fail while it runs.",
    )
    add_milvus_arguments(reindex)
    add_model_arguments(reindex)
    reindex.set_defaults(handler=_reindex)

    from predictor.index.duplicates import DEFAULT_THRESHOLD

    duplicates = add_command(
        "duplicates",
        help="Find near-duplicate clusters among the stored vectors (nothing is embedded again); JSON Lines out.",
    )
    duplicates.add_argument(
        "--out", required=True, help="JSON Lines file: one cluster per line (ids, uris, min_score)."
    )
    duplicates.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"Pairs scoring at least this are duplicates (default {DEFAULT_THRESHOLD}, measured on planted copies; "
        "docs/search-index.md): the likeness of their copy signatures, or their embedding score in a collection made "
        "before signatures.",
    )
    duplicates.add_argument("--filter", default=None, help="Only rows matching this metadata filter.")
    duplicates.add_argument(
        "--mark",
        default=None,
        help="Write each member's cluster id into this metadata field (and FIELD_copy: true on all but one member, "
        "so a filter 'not exists metadata[\"FIELD_copy\"]' shows one image per cluster).",
    )
    add_namespace_argument(duplicates)
    add_milvus_arguments(duplicates)
    add_model_arguments(duplicates)
    duplicates.set_defaults(handler=_duplicates)
