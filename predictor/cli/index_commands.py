"""`image-search index` and `delete`: what the model's collection holds."""

import argparse
import os
import sys
from pathlib import Path

from predictor.search_options import DEFAULT_NAMESPACE


def _namespace(args: argparse.Namespace) -> str:
    from predictor.search_options import check_namespace

    return check_namespace(args.namespace)


def open_index(args: argparse.Namespace, spec=None):  # noqa: ANN001, ANN201 - lazy imports keep the CLI fast
    """The collection of the model in --model-dir (or `spec`) at --milvus-uri / --collection."""
    from predictor.config import milvus_settings
    from predictor.index import ImageIndex
    from predictor.milvus import MilvusAccess
    from predictor.model_package import resolve_spec

    milvus = milvus_settings(args)
    identity = (spec or resolve_spec(args.model_dir)).identity
    return ImageIndex.for_model(
        MilvusAccess(milvus.uri, milvus.token), milvus.collection, identity, vector_index=milvus.index
    )


def _index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from predictor.backbone import Backbone
    from predictor.compilation import for_batch_job
    from predictor.indexing import discover_images, in_shard, index_images, unmatched_rows
    from predictor.manifests import read_manifest
    from predictor.model_package import resolve_spec

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.shard_count < 1 or not 0 <= args.shard_index < args.shard_count:
        raise ValueError(f"--shard-index must be in [0, --shard-count); got {args.shard_index} of {args.shard_count}")
    namespace = _namespace(args)
    # A malformed manifest stops the run here, before anything is embedded or written.
    manifest = read_manifest(Path(args.metadata)) if args.metadata else None
    everything = discover_images(args.sources)
    images = [image for image in everything if in_shard(image.path, args.shard_index, args.shard_count)]
    spec = resolve_spec(args.model_dir)
    index = open_index(args, spec)
    backbone = Backbone(spec, args.device, args.precision, compile_mode=for_batch_job(args.compile, len(images)))
    # Milvus before the network: an unreachable or foreign collection is reported before seconds of model loading.
    index.ensure_collection()
    index.check_writable(namespace)
    backbone.load()
    with tqdm(total=len(images), unit="img", desc=f"indexing into {index.base}", file=sys.stderr) as bar:
        report = index_images(
            images, backbone, index, namespace, manifest, batch_size=args.batch_size, progress=bar.update
        )
    if manifest:
        report.unmatched = unmatched_rows(manifest, report.matched_rows, everything)
    for path, reason in report.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for row in report.unmatched:
        print(f"{manifest.source} {row.describe()} matched no file", file=sys.stderr)
    index.settle()
    where = f"namespace {namespace!r} of collection {index.collection}"
    print(f"{report.summary()} ({where} now holds {index.count(namespace)} images)")
    index.close()
    return 0


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


def add_namespace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        help=f"Namespace (tenant) the rows belong to; default {DEFAULT_NAMESPACE!r}. The same image in two namespaces "
        "is two rows.",
    )


def register(add_command, for_serving: bool) -> None:
    from predictor import environment
    from predictor.config import add_milvus_arguments, add_model_arguments

    index = add_command("index", help="Embed image files and add them to the Milvus collection.")
    index.add_argument("sources", nargs="+", help="Directories (searched recursively) and/or text files of paths.")
    index.add_argument(
        "--metadata",
        help="JSON Lines or CSV file of metadata fields per image, naming each image by 'path' (relative to its "
        "SOURCE directory) or 'id'; a row with both gives the image that id.",
    )
    add_namespace_argument(index)
    add_milvus_arguments(index)
    add_model_arguments(index)
    index.add_argument("--batch-size", type=int, default=32, help="Images embedded per forward pass.")
    index.add_argument(
        "--shard-index",
        type=int,
        default=os.environ.get(environment.SHARD_INDEX, "0"),
        help="This worker's shard, 0-based (Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX).",
    )
    index.add_argument("--shard-count", type=int, default=1, help="How many shards split the sources.")
    index.set_defaults(handler=_index)

    delete = add_command("delete", help="Remove images from the model's collection.")
    delete.add_argument("--id", action="append", default=[], help="Image id to delete (repeatable).")
    delete.add_argument("--source", action="append", default=[], help="File or directory whose images to delete.")
    add_namespace_argument(delete)
    add_milvus_arguments(delete)
    add_model_arguments(delete)
    delete.set_defaults(handler=_delete)
