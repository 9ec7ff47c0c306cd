"""How the `image-search` command reports a failure: one line on stderr and a non-zero exit, never a traceback.

Errors a user can cause (a wrong flag value, a missing file, a Milvus or server that cannot be reached, a collection
that does not exist) say what went wrong and exit 2. Anything else is a bug: it still gets one line, exit 1, and the
traceback goes to the log at DEBUG level (`--log-level DEBUG`), where someone filing an issue can find it.
"""

import logging
import sys

logger = logging.getLogger("image_search.cli")

USER_ERROR = 2
UNEXPECTED_ERROR = 1
INTERRUPTED = 130
MAX_MESSAGE_CHARS = 600

# Raised by libraries the CLI calls, matched by name so that reporting an error never imports pymilvus or tritonclient.
_SERVICE_ERRORS = {"MilvusException": "Milvus refused", "InferenceServerException": "the server answered"}


def one_line(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def describe_user_error(error: BaseException) -> str | None:
    """The message for an error a user can cause and fix, or None for a bug."""
    for cls in type(error).__mro__:
        if cls.__name__ in _SERVICE_ERRORS:
            detail = getattr(error, "message", None)
            detail = detail() if callable(detail) else detail
            return f"{_SERVICE_ERRORS[cls.__name__]}: {one_line(detail or error)}"
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    if isinstance(error, ValueError | OSError | RuntimeError | LookupError):
        return one_line(error)
    return None


def report(command: str, error: BaseException) -> int:
    """Print the one line for `error` and return the exit status."""
    if isinstance(error, KeyboardInterrupt):
        print(f"image-search {command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    message = describe_user_error(error)
    if message is not None:
        print(f"image-search {command}: error: {message}", file=sys.stderr)
        return USER_ERROR
    logger.debug("unexpected error in image-search %s", command, exc_info=error)
    print(
        f"image-search {command}: unexpected error ({type(error).__name__}): {one_line(error)}; "
        "run again with --log-level DEBUG for the traceback",
        file=sys.stderr,
    )
    return UNEXPECTED_ERROR
