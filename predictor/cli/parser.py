"""The `image-search` parser: shared options, one module per group of subcommands, and one way to report errors."""

import argparse
import logging
import os
import sys

from predictor import __version__, environment
from predictor.cli import (
    catalogue_commands,
    evaluation_commands,
    index_commands,
    lifecycle_commands,
    metadata_commands,
    projection_commands,
    query_commands,
    registry_commands,
    rollout_commands,
    serve_commands,
    sync_commands,
)
from predictor.cli.errors import USER_ERROR, report

# Each module's `register(add_command)` adds its subcommands; the order here is the order of `--help`.
COMMAND_MODULES = (
    serve_commands,
    index_commands,
    sync_commands,
    metadata_commands,
    query_commands,
    catalogue_commands,
    lifecycle_commands,
    evaluation_commands,
    projection_commands,
    registry_commands,
    rollout_commands,
)


class CommandParser(argparse.ArgumentParser):
    """Reports a bad flag in one line that says where help is, instead of argparse's usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _logging_options() -> "CommandParser":
    options = CommandParser(add_help=False)
    options.add_argument(
        "--log-level",
        default=os.environ.get(environment.LOG_LEVEL, "INFO"),
        help="DEBUG, INFO, WARNING or ERROR. Env: LOG_LEVEL.",
    )
    options.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=os.environ.get(environment.LOG_FORMAT),
        help="json (one object per line) or text; default json for serve, text otherwise. Env: LOG_FORMAT.",
    )
    return options


def build_parser(for_serving: bool = True) -> argparse.ArgumentParser:
    """`for_serving=False` leaves out KServe's flags: importing KServe clashes with the tritonclient `query` uses."""
    parser = CommandParser(prog="image-search", description="Image similarity search on KServe and Milvus.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    logging_options = _logging_options()
    subcommands = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, parents: list | tuple = (), **kwargs) -> argparse.ArgumentParser:
        return subcommands.add_parser(name, parents=[logging_options, *parents], **kwargs)

    for module in COMMAND_MODULES:
        module.register(add_command, for_serving=for_serving)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(for_serving="serve" in argv).parse_args(argv)
    from predictor.observability.logs import configure_logging

    try:
        configure_logging(args.log_level, args.log_format or ("json" if args.command == "serve" else "text"))
    except ValueError as error:
        return report(args.command, error)
    # Libraries that narrate their own start-up at INFO drown what the user asked for.
    for noisy in ("faiss", "faiss.loader", "milvus_lite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # milvus-lite's embedded gRPC service answers an optional pymilvus call with "not implemented", and grpc logs the
    # refusal as an error with a traceback although pymilvus carries on.
    logging.getLogger("grpc._server").addFilter(lambda record: "Method not implemented" not in record.getMessage())
    try:
        return args.handler(args)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - every failure becomes one line, see errors.py
        return report(args.command, error)
