"""`image-search serve`: the KServe model server."""

import argparse


def _serve(args: argparse.Namespace) -> int:
    from predictor.cli.options import search_settings, serve_settings, ui_settings
    from predictor.server import serve

    if args.workers != 1:
        raise ValueError("--workers must be 1: one process per pod (scale with replicas); torch and CUDA don't fork")
    serve(serve_settings(args), search_settings(args), args, ui=ui_settings(args))
    return 0


def _kserve_server_parser() -> list[argparse.ArgumentParser]:
    # Imported only for `serve`: KServe registers its own copy of the V2 gRPC protos, which clashes with the
    # tritonclient copy that `query` uses in the same process.
    from kserve import model_server

    return [model_server.parser]


def register(add_command, for_serving: bool) -> None:
    from predictor.cli.options import add_search_arguments, add_serving_arguments, add_ui_arguments

    serve = add_command(
        "serve",
        parents=_kserve_server_parser() if for_serving else [],
        help="Start the KServe model server (REST and gRPC).",
    )
    add_serving_arguments(serve)
    add_search_arguments(serve)
    add_ui_arguments(serve)
    serve.set_defaults(handler=_serve)
