"""The one way this project talks to Milvus: a connection, one error translator, and the collection-level calls.

The same code talks to an embedded milvus-lite file (a path ending in `.db`) or a Milvus server (`http://host:19530`).
Every call blocks, so the serving path runs them in worker threads. `ImageIndex` (collection.py, one model's
collection) and the lifecycle commands (lifecycle.py, aliases) are built on this; nothing else holds a `MilvusClient`.
"""

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import grpc
from pymilvus import MilvusClient, MilvusException

from predictor.errors import IndexUnavailable, InvalidRequest, RequestTimedOut
from predictor.index.settings import MilvusSettings, is_local_file

__all__ = ["MilvusAccess", "like_prefix", "quoted"]

COLLECTION_NOT_LOADED = 101
# What Milvus says when it cannot evaluate a filter expression (milvus-lite 3.2 and Milvus 2.3 word it differently).
_EXPRESSION_REFUSED = re.compile(r"cannot parse expression|failed to create query plan|at column \d+", re.IGNORECASE)
# Milvus 2.3.x before 2.3.10 computes an upserted row's partition from the wrong field (milvus-io/milvus#30607, fixed by
# #30772), so upserted rows vanish from searches filtered by their partition key.
_PARTITION_KEY_UPSERT_FIXED = (2, 3, 10)


# A `\\u00XX` escape that json.dumps wrote for a control character, and not a backslash of the text followed by "u00XX"
# (json.dumps doubles those: an even run of backslashes before the `u`).
_CONTROL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u00([01][0-9a-f])")


def quoted(text: str) -> str:
    """A string literal for a Milvus filter expression. milvus-lite 3.2 refuses `\\u` escapes, so text stays text,
    control characters included: json.dumps writes those other than \\b \\f \\n \\r \\t as `\\u00XX`, and both
    Milvus kinds take them as they are (a raw newline is what the Milvus server refuses)."""
    return _CONTROL_ESCAPE.sub(
        lambda found: found.group(1) + chr(int(found.group(2), 16)), json.dumps(text, ensure_ascii=False)
    )


# Characters that some Milvus reads specially in a `like` pattern.
_LIKE_SPECIAL = re.compile(r"[%_\\]")


def like_prefix(prefix: str) -> str:
    """A `like` pattern matching every string that starts with `prefix`, and possibly more: a caller keeps only the
    rows whose value really starts with `prefix` (`str.startswith`).

    Milvus servers disagree on `like`: milvus-lite 3.2 reads `_` as any character and `\\_` as an underscore, while
    Milvus 2.3 reads `_` as itself and has no escapes. No one escaped pattern means the same to both, so the pattern
    stops before the first `%`, `_` or backslash and the exact test is left to the caller.
    """
    special = _LIKE_SPECIAL.search(prefix)
    return (prefix if special is None else prefix[: special.start()]) + "%"


class _LiteOpenFailure(logging.Filter):
    """milvus-lite logs why it could not open a file, with a traceback, and pymilvus then raises only "Open local milvus
    failed": this keeps the cause for the one line the user gets, and drops the log record."""

    def __init__(self) -> None:
        super().__init__()
        self.cause: BaseException | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            self.cause = record.exc_info[1]
        return False


def _cannot_open(uri: str, cause: BaseException | None, error: MilvusException) -> str:
    # By name: milvus_lite's exception classes are not part of pymilvus's API.
    if type(cause).__name__ == "DataDirLockedError":
        return (
            f"cannot open {uri}: another process has it open (milvus-lite lets one process at a time use a file); "
            "stop it, or serve the collection from a Milvus server and give every process its http:// URI"
        )
    return f"cannot connect to Milvus at {uri}: {cause or error}"


def _rpc_failure(error: grpc.RpcError, call: str, timeout_s: float | None) -> IndexUnavailable | RequestTimedOut:
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimedOut(f"Milvus {call} did not answer within {timeout_s or 0:.3g} s")
    return IndexUnavailable(f"Milvus {call} failed: {error.code().name} {error.details()}")


class MilvusAccess:
    """A lazily opened connection to one Milvus; thread-safe, as the client is."""

    def __init__(self, uri: str, token: str | None = None, call_timeout_s: float | None = None) -> None:
        self.uri = uri
        self._token = token
        self.call_timeout_s = call_timeout_s
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: MilvusSettings) -> "MilvusAccess":
        return cls(settings.uri, settings.token, settings.call_timeout_s)

    @property
    def client(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                if is_local_file(self.uri):
                    Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                failure = _LiteOpenFailure()
                lite_log = logging.getLogger("milvus_lite.server_manager")
                lite_log.addFilter(failure)
                try:
                    self._client = MilvusClient(uri=self.uri, token=self._token or "")
                except MilvusException as error:
                    raise IndexUnavailable(_cannot_open(self.uri, failure.cause, error)) from None
                finally:
                    lite_log.removeFilter(failure)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def call(self, what: str, method: str, *args: Any, collection: str | None = None, **kwargs: Any) -> Any:
        """`client.<method>(*args, **kwargs)`, with every Milvus failure turned into a typed error.

        A collection that comes back released (after a Milvus restart, or a file reopened) is loaded and the call
        repeated. A filter Milvus cannot evaluate is the caller's `InvalidRequest`; a call Milvus does not answer
        within its `timeout` (or `call_timeout_s` when it has none) is `RequestTimedOut` (pymilvus lets gRPC's
        DEADLINE_EXCEEDED through as it is); anything else is `IndexUnavailable`, which clients see as 503 /
        UNAVAILABLE.
        """
        where = f" on {collection!r}" if collection else ""
        if kwargs.get("timeout") is None and self.call_timeout_s is not None:
            kwargs["timeout"] = self.call_timeout_s
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except grpc.RpcError as error:
            raise _rpc_failure(error, f"{what}{where}", kwargs.get("timeout")) from None
        except MilvusException as error:
            if error.code == COLLECTION_NOT_LOADED and collection:
                return self._load_and_retry(what, where, method, collection, args, kwargs)
            if kwargs.get("filter") and _EXPRESSION_REFUSED.search(str(error.message)):
                raise InvalidRequest(f"filter: Milvus cannot evaluate it: {error.message}") from None
            raise IndexUnavailable(f"Milvus {what}{where} failed: {error}") from None

    def _load_and_retry(self, what: str, where: str, method: str, collection: str, args: tuple, kwargs: dict) -> Any:
        try:
            self.client.load_collection(collection, timeout=kwargs.get("timeout"))
            return getattr(self.client, method)(*args, **kwargs)
        except grpc.RpcError as error:
            raise _rpc_failure(error, f"{what}{where}", kwargs.get("timeout")) from None
        except MilvusException as error:
            raise IndexUnavailable(f"Milvus {what}{where} failed: {error}") from None

    def has_collection(self, name: str, timeout_s: float | None = None) -> bool:
        return bool(self.call("has_collection", "has_collection", name, timeout=timeout_s))

    def describe(self, name: str) -> dict:
        return self.call("describe", "describe_collection", name, collection=name)

    def properties(self, name: str) -> dict:
        return self.describe(name).get("properties", {})

    def set_properties(self, name: str, properties: dict[str, str]) -> None:
        self.call("alter_collection_properties", "alter_collection_properties", name, properties=properties)

    def list_collections(self) -> list[str]:
        return list(self.call("list_collections", "list_collections"))

    def load(self, name: str) -> None:
        self.call("load", "load_collection", name)

    def describe_index(self, name: str, field_name: str = "vector") -> dict:
        return self.call("describe_index", "describe_index", name, field_name, collection=name)

    def count(self, name: str, expression: str = "", consistency_level: str | None = None) -> int:
        """Rows matching `expression`, at the collection's consistency level unless one is given."""
        level = {"consistency_level": consistency_level} if consistency_level else {}
        rows = self.call(
            "count", "query", name, filter=expression, output_fields=["count(*)"], collection=name, **level
        )
        return int(rows[0]["count(*)"])

    def aliases(self) -> list[str]:
        return list(self.call("list_aliases", "list_aliases").get("aliases", []))

    def alias_target(self, alias: str) -> str | None:
        """The collection `alias` points at, or None when there is no such alias."""
        if alias not in self.aliases():
            return None
        return self.call("describe_alias", "describe_alias", alias)["collection_name"]

    def create_alias(self, collection: str, alias: str) -> None:
        self.call("create_alias", "create_alias", collection, alias)

    def alter_alias(self, collection: str, alias: str) -> None:
        self.call("alter_alias", "alter_alias", collection, alias)

    def server_version(self) -> str:
        return str(self.call("get_server_version", "get_server_version"))

    def partition_key_works(self) -> bool:
        """Whether a partition-key field keeps upserted rows findable: milvus-lite and Milvus from 2.3.10 on."""
        version = self.server_version()
        if version.startswith("milvus_lite"):
            return True
        numbers = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version)
        return numbers is not None and tuple(int(part) for part in numbers.groups()) >= _PARTITION_KEY_UPSERT_FIXED
