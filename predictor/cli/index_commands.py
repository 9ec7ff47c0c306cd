"""`image-search index` and `delete`: what the model's collection holds."""

import argparse
import os
import sys
from pathlib import Path


def _index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from predictor.backbone import Backbone
    from predictor.config import milvus_settings
    from predictor.index import ImageIndex
    from predictor.indexing import discover, in_shard, index_paths
    from predictor.model_package import resolve_spec

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.shard_count < 1 or not 0 <= args.shard_index < args.shard_count:
        raise ValueError(f"--shard-index must be in [0, --shard-count); got {args.shard_index} of {args.shard_count}")
    milvus = milvus_settings(args)
    spec = resolve_spec(args.model_dir)
    paths = [p for p in discover(args.sources) if in_shard(p, args.shard_index, args.shard_count)]
    backbone = Backbone(spec, args.device, args.precision)
    # Milvus before the network: an unreachable or foreign collection is reported before seconds of model loading.
    index = ImageIndex(milvus.uri, milvus.collection, spec.identity, milvus.token, milvus.index)
    index.ensure_collection()
    backbone.load()
    with tqdm(total=len(paths), unit="img", desc=f"indexing into {milvus.collection}", file=sys.stderr) as bar:
        report = index_paths(paths, backbone, index, batch_size=args.batch_size, progress=bar.update)
    for path, reason in report.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{report.summary()} (collection {index.collection} now holds {index.count()} images)")
    index.close()
    return 0


def _delete(args: argparse.Namespace) -> int:
    from predictor.config import milvus_settings
    from predictor.index import ImageIndex
    from predictor.model_package import resolve_spec

    if not args.id and not args.source:
        raise ValueError("say what to delete: --id ID and/or --source PATH")
    milvus = milvus_settings(args)
    index = ImageIndex(milvus.uri, milvus.collection, resolve_spec(args.model_dir).identity, milvus.token)
    if not index.exists():
        raise ValueError(f"collection {index.collection} does not exist at {milvus.uri}")
    index.client.load_collection(index.collection)
    ids = list(args.id)
    for source in args.source:
        ids += index.ids_under(str(Path(source).resolve()))
    deleted = index.delete(ids)
    print(f"deleted {deleted} (collection {index.collection} now holds {index.count()} images)")
    return 0


def register(add_command, for_serving: bool) -> None:
    from predictor import environment
    from predictor.config import add_milvus_arguments, add_model_arguments

    index = add_command("index", help="Embed image files and add them to the Milvus collection.")
    index.add_argument("sources", nargs="+", help="Directories (searched recursively) and/or text files of paths.")
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
    add_milvus_arguments(delete)
    add_model_arguments(delete)
    delete.set_defaults(handler=_delete)
