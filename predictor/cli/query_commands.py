"""`image-search query` and `query-example`: ask a running server, as any V2 client would."""

import argparse
from pathlib import Path


def _query(args: argparse.Namespace) -> int:
    from predictor.client.query import print_table, search

    if bool(args.images) == bool(args.text):
        raise ValueError("give image files to search with, or --text, not both")
    results = search(
        args.url,
        args.transport,
        args.images,
        args.top_k,
        args.timeout_s,
        offset=args.offset,
        min_score=args.min_score,
        filter=args.filter,
        namespace=args.namespace,
        effort=args.effort,
        diversity=args.diversity,
        group_by=args.group_by,
        group_size=args.group_size,
        texts=args.text,
    )
    for query, hits in zip(args.images or args.text, results, strict=True):
        print_table(query, hits)
    return 0


def _query_example(args: argparse.Namespace) -> int:
    example = Path(args.catalogue) / "chelsea.jpg"
    url = f"http://localhost:{args.http_port}"
    print(
        f"""
Serving on {url} (REST) and localhost:{args.http_port + 1} (gRPC) once the log says the server started.

Search page: {url}/ui/   (drop in a photo, click a result for more like it)

Or try it from another terminal:

  .venv/bin/image-search query {example} --url {url} --top-k 3

  (printf '{{"instances": [{{"image": {{"b64": "'
   base64 -w0 {example}
   printf '"}}}}], "parameters": {{"top_k": 3}}}}') > query.json
  curl -s {url}/v1/models/image-search:predict -H 'Content-Type: application/json' -d @query.json
"""
    )
    return 0


def register(add_command, for_serving: bool) -> None:
    query = add_command("query", help="Ask a running server for the images most similar to these.")
    query.add_argument("images", nargs="*", help="Image files to search with.")
    query.add_argument(
        "--text",
        action="append",
        default=[],
        help="Words to search for instead, such as 'a red bicycle' (repeatable; needs a model with a text tower).",
    )
    query.add_argument("--url", default="http://localhost:8080", help="Server: http://host:8080 or host:8081 for gRPC.")
    query.add_argument("--transport", choices=["http", "grpc"], default="http", help="V2 transport to use.")
    query.add_argument("--top-k", type=int, default=5, help="How many similar images to list per query image.")
    query.add_argument("--offset", type=int, default=0, help="Skip this many hits first (the next page).")
    query.add_argument("--min-score", type=float, default=None, help="Leave out hits scoring below this (-1 to 1).")
    query.add_argument(
        "--filter",
        default=None,
        help='A condition over metadata fields, such as \'metadata["category"] == "birds"\' (the server checks it).',
    )
    query.add_argument(
        "--effort", type=int, default=None, help="Search effort of the collection's index (default: the index's own)."
    )
    query.add_argument(
        "--diversity",
        type=float,
        default=None,
        help="0 to 1: trade similarity for variety among the hits (maximal marginal relevance; default 0, off).",
    )
    query.add_argument("--group-by", default=None, help="Metadata field: at most --group-size hits per value of it.")
    query.add_argument("--group-size", type=int, default=None, help="Hits per --group-by value (1 to 10, default 1).")
    query.add_argument("--namespace", default=None, help="Search this namespace (default: the server's default).")
    query.add_argument("--timeout-s", type=float, default=60.0, help="Give up on the server after this many seconds.")
    query.set_defaults(handler=_query)

    example = add_command("query-example", help="Print a ready-to-paste query against a local server.")
    example.add_argument("--http-port", type=int, default=8080, help="The server's HTTP port.")
    example.add_argument("--catalogue", default="data/sample-catalogue", help="Where the sample photos are.")
    example.set_defaults(handler=_query_example)
