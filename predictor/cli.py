"""The `image-search` command: serve, index, query, and the small tools around them."""

import argparse
import logging
import os
import sys
from pathlib import Path

from predictor import __version__

logger = logging.getLogger("image-search")


def _serve(args: argparse.Namespace) -> int:
    from predictor.config import serve_settings
    from predictor.server import serve

    if args.workers != 1:
        raise SystemExit("--workers must be 1: one process per pod (scale with replicas); torch and CUDA don't fork")
    serve(serve_settings(args), args)
    return 0


def _index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from predictor.backbone import Backbone
    from predictor.config import milvus_settings
    from predictor.index import ImageIndex
    from predictor.indexing import discover, in_shard, index_paths
    from predictor.model_package import resolve_spec

    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.shard_count < 1 or not 0 <= args.shard_index < args.shard_count:
        raise SystemExit(f"--shard-index must be in [0, --shard-count); got {args.shard_index} of {args.shard_count}")
    milvus = milvus_settings(args)
    spec = resolve_spec(args.model_dir)
    paths = [p for p in discover(args.sources) if in_shard(p, args.shard_index, args.shard_count)]
    backbone = Backbone(spec, args.device)
    backbone.load()
    index = ImageIndex(milvus.uri, milvus.collection, spec.identity, milvus.token)
    index.ensure_collection()
    with tqdm(total=len(paths), unit="img", desc=f"indexing into {milvus.collection}", file=sys.stderr) as bar:
        report = index_paths(paths, backbone, index, batch_size=args.batch_size, progress=bar.update)
    for path, reason in report.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{report.summary()} (collection {index.collection} now holds {index.count()} images)")
    index.close()
    return 0


def _query(args: argparse.Namespace) -> int:
    from predictor.query_client import print_table, search

    for path, hits in zip(args.images, search(args.url, args.transport, args.images, args.top_k), strict=True):
        print_table(path, hits)
    return 0


def _sample_catalogue(args: argparse.Namespace) -> int:
    from predictor.catalogue import write_catalogue, write_labelled_sample

    if args.labelled:
        write_labelled_sample(Path(args.out))
        print(f"labelled sample photos (one folder per category) in {args.out}")
        return 0
    paths = write_catalogue(Path(args.out))
    print(f"{len(paths)} sample photos in {args.out}")
    return 0


def _query_example(args: argparse.Namespace) -> int:
    example = Path(args.catalogue) / "chelsea.jpg"
    url = f"http://localhost:{args.http_port}"
    print(
        f"""
Serving on {url} (REST) and localhost:{args.http_port + 1} (gRPC) once the log says the server started.
Try it from another terminal:

  .venv/bin/image-search query {example} --url {url} --top-k 3

  (printf '{{"instances": [{{"image": {{"b64": "'
   base64 -w0 {example}
   printf '"}}}}], "parameters": {{"top_k": 3}}}}') > query.json
  curl -s {url}/v1/models/image-search:predict -H 'Content-Type: application/json' -d @query.json
"""
    )
    return 0


def _export_model(args: argparse.Namespace) -> int:
    from predictor.model_package import default_spec, export_package

    out = export_package(default_spec(), Path(args.out))
    print(f"wrote model package {out}")
    return 0


def _collections(args: argparse.Namespace) -> int:
    from predictor.config import milvus_settings
    from predictor.index import connect
    from predictor.lifecycle import list_collections

    milvus = milvus_settings(args)
    infos = list_collections(connect(milvus.uri, milvus.token), milvus.collection)
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
    from predictor.config import milvus_settings
    from predictor.index import connect
    from predictor.lifecycle import find_version, promote

    milvus = milvus_settings(args)
    client = connect(milvus.uri, milvus.token)
    target = find_version(client, milvus.collection, args.to, args.model_name)
    previous = promote(client, milvus.collection, target, force=args.force)
    print(f"{milvus.collection} -> {target.name} ({target.rows} images); was {previous or 'nothing'}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from predictor.config import milvus_settings
    from predictor.index import connect
    from predictor.lifecycle import rollback

    milvus = milvus_settings(args)
    current, previous = rollback(connect(milvus.uri, milvus.token), milvus.collection)
    print(f"{milvus.collection} -> {previous}; was {current}")
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


def _eval(args: argparse.Namespace) -> int:
    from predictor.backbone import Backbone
    from predictor.evaluation import evaluate, gate_failures, write_report
    from predictor.model_package import resolve_spec

    backbone = Backbone(resolve_spec(args.model_dir), args.device)
    backbone.load()
    report = evaluate(backbone, Path(args.labelled), k=args.k)
    print(report.table())
    write_report(report, Path(args.report))
    print(f"\nreport written to {args.report}")
    failures = gate_failures(report, args.min_precision, args.min_recall)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _kserve_server_parser() -> list[argparse.ArgumentParser]:
    # Imported only for `serve`: KServe registers its own copy of the V2 gRPC protos, which clashes with the
    # tritonclient copy that `query` uses in the same process.
    from kserve import model_server

    return [model_server.parser]


def build_parser(for_serving: bool = True) -> argparse.ArgumentParser:
    from predictor.config import add_milvus_arguments, add_model_arguments, add_serving_arguments

    parser = argparse.ArgumentParser(prog="image-search", description="Image similarity search on KServe and Milvus.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    logging_options = argparse.ArgumentParser(add_help=False)
    logging_options.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR. Env: LOG_LEVEL.",
    )
    logging_options.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=os.environ.get("LOG_FORMAT"),
        help="json (one object per line) or text; default json for serve, text otherwise. Env: LOG_FORMAT.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, parents: list | tuple = (), **kwargs) -> argparse.ArgumentParser:
        return subcommands.add_parser(name, parents=[logging_options, *parents], **kwargs)

    serve = add_command(
        "serve",
        parents=_kserve_server_parser() if for_serving else [],
        help="Start the KServe model server (REST and gRPC).",
    )
    add_serving_arguments(serve)
    serve.set_defaults(handler=_serve)

    index = add_command("index", help="Embed image files and add them to the Milvus collection.")
    index.add_argument("sources", nargs="+", help="Directories (searched recursively) and/or text files of paths.")
    add_milvus_arguments(index)
    add_model_arguments(index)
    index.add_argument("--batch-size", type=int, default=32, help="Images embedded per forward pass.")
    index.add_argument(
        "--shard-index",
        type=int,
        default=int(os.environ.get("JOB_COMPLETION_INDEX", 0)),
        help="This worker's shard, 0-based (Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX).",
    )
    index.add_argument("--shard-count", type=int, default=1, help="How many shards split the sources.")
    index.set_defaults(handler=_index)

    query = add_command("query", help="Ask a running server for the images most similar to these.")
    query.add_argument("images", nargs="+", help="Image files to search with.")
    query.add_argument("--url", default="http://localhost:8080", help="Server: http://host:8080 or host:8081 for gRPC.")
    query.add_argument("--transport", choices=["http", "grpc"], default="http", help="V2 transport to use.")
    query.add_argument("--top-k", type=int, default=5, help="How many similar images to list per query image.")
    query.set_defaults(handler=_query)

    catalogue = add_command("sample-catalogue", help="Write the bundled sample photographs as JPEG files.")
    catalogue.add_argument("--out", default="data/sample-catalogue", help="Directory to write them to.")
    catalogue.add_argument("--labelled", action="store_true", help="Write them in category folders, for eval.")
    catalogue.set_defaults(handler=_sample_catalogue)

    example = add_command("query-example", help="Print a ready-to-paste query against a local server.")
    example.add_argument("--http-port", type=int, default=8080, help="The server's HTTP port.")
    example.add_argument("--catalogue", default="data/sample-catalogue", help="Where the sample photos are.")
    example.set_defaults(handler=_query_example)

    export = add_command("export-model", help="Write the bundled model as a model package directory.")
    export.add_argument("--out", required=True, help="Directory to write model.json and the weights to.")
    export.set_defaults(handler=_export_model)

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

    delete = add_command("delete", help="Remove images from the model's collection.")
    delete.add_argument("--id", action="append", default=[], help="Image id to delete (repeatable).")
    delete.add_argument("--source", action="append", default=[], help="File or directory whose images to delete.")
    add_milvus_arguments(delete)
    add_model_arguments(delete)
    delete.set_defaults(handler=_delete)

    evaluation = add_command("eval", help="Score a model on a labelled folder; fail below thresholds.")
    evaluation.add_argument("--labelled", required=True, help="Folder with one sub-folder of images per category.")
    evaluation.add_argument("--k", type=int, default=5, help="k of precision@k.")
    evaluation.add_argument("--min-precision", type=float, default=0.0, help="Fail if mean precision@k is lower.")
    evaluation.add_argument("--min-recall", type=float, default=0.0, help="Fail if near-duplicate recall@1 is lower.")
    evaluation.add_argument("--report", default="eval-report.json", help="Where to write the JSON report.")
    add_model_arguments(evaluation)
    evaluation.set_defaults(handler=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(for_serving="serve" in argv).parse_args(argv)
    from predictor.logs import configure_logging

    configure_logging(args.log_level, args.log_format or ("json" if args.command == "serve" else "text"))
    # Libraries that narrate their own start-up at INFO drown what the user asked for.
    for noisy in ("faiss", "faiss.loader", "milvus_lite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # milvus-lite's embedded gRPC service answers an optional pymilvus call with "not implemented", and grpc logs the
    # refusal as an error with a traceback although pymilvus carries on.
    logging.getLogger("grpc._server").addFilter(lambda record: "Method not implemented" not in record.getMessage())
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # Configuration and start-up problems: say what to change, without a traceback.
        print(f"image-search {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
