"""`image-search sync SOURCE`: make a namespace hold what one folder or object-store prefix holds now."""

import argparse
import sys

from predictor.cli.index_commands import add_namespace_argument, add_source_arguments, check_batch_and_shards


def _sync(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from predictor.cli.index_commands import _namespace, open_index
    from predictor.embedding.model_package import resolve_spec
    from predictor.index.source_listing import list_sources
    from predictor.index.sync import plan_sync, run_sync, source_prefix

    check_batch_and_shards(args)
    namespace = _namespace(args)
    prefix = source_prefix(args.source)
    # The whole listing first: a source that cannot be listed stops the sync before anything is written or deleted.
    listing = list_sources([args.source], args.shard_index, args.shard_count, args.fetch_workers)
    for uri in listing.not_images:
        print(f"skipped {uri}: not an image (by its name)", file=sys.stderr)
    spec = resolve_spec(args.model_dir)
    index = open_index(args, spec, creates=True)
    if args.dry_run:
        if index.exists():
            index.load()
    else:
        index.ensure_collection()
        index.check_writable(namespace)
    plan = plan_sync(index, namespace, prefix, listing, (args.shard_index, args.shard_count))

    def backbone():  # noqa: ANN202 - torch is imported only when there is something to embed
        from predictor.embedding.backbone import Backbone
        from predictor.embedding.compilation import for_batch_job

        work = len(plan.new) + len(plan.to_check)
        model = Backbone(spec, args.device, args.precision, compile_mode=for_batch_job(args.compile, work))
        model.load()
        return model

    with tqdm(total=len(plan.new) + len(plan.to_check), unit="img", desc="syncing", file=sys.stderr) as bar:
        report = run_sync(
            plan,
            index,
            namespace,
            None if args.dry_run else backbone,
            batch_size=args.batch_size,
            fetch_workers=args.fetch_workers,
            progress=bar.update,
        )
    for uri, reason in report.failed:
        print(f"skipped {uri}: {reason}", file=sys.stderr)
    for change, uri in report.changes:
        print(f"would {change} {uri}")
    holds = index.count(namespace) if index.exists() else 0
    if not args.dry_run:
        index.settle()
        holds = index.count(namespace)
    where = f"namespace {namespace!r} of collection {index.collection}"
    print(f"{report.summary(args.dry_run)} ({where} {'holds' if args.dry_run else 'now holds'} {holds} images)")
    index.close()
    return 0


def register(add_command, for_serving: bool) -> None:  # noqa: ARG001 - every command module has this signature
    from predictor.cli.options import add_milvus_arguments, add_model_arguments

    sync = add_command(
        "sync",
        help="Make the collection hold what SOURCE holds now: embed new images, embed replaced ones again, delete "
        "the rows of images that are gone.",
    )
    sync.add_argument(
        "source",
        help="A folder, or an object-store prefix (s3://BUCKET/PREFIX, gs://BUCKET/PREFIX). Only rows whose uri lies "
        "under it are compared, added or deleted.",
    )
    sync.add_argument("--dry-run", action="store_true", help="Print what would change, and change nothing.")
    add_namespace_argument(sync)
    add_milvus_arguments(sync)
    add_model_arguments(sync)
    add_source_arguments(sync)
    sync.set_defaults(handler=_sync)
