"""The environment variables the project reads, and the one a library would misread.

pymilvus reads `MILVUS_URI` itself when it is imported and refuses anything but an http(s) URI, so the documented
milvus-lite form (`MILVUS_URI=data/milvus.db`) used to kill every command at import. The project's own variable is
`IMAGE_SEARCH_MILVUS_URI`. `MILVUS_URI` still works: its value is taken here, when the `predictor` package is first
imported (before any module of it imports pymilvus), and the variable is then blanked. Blanked rather than removed,
because pymilvus also loads a `.env` file, which never overrides a variable that is set, even to "".
"""

import os

MILVUS_URI = "IMAGE_SEARCH_MILVUS_URI"
LEGACY_MILVUS_URI = "MILVUS_URI"
MILVUS_TOKEN = "MILVUS_TOKEN"
COLLECTION = "IMAGE_SEARCH_COLLECTION"
MODEL_DIR = "MODEL_DIR"
DEVICE = "IMAGE_SEARCH_DEVICE"
PRECISION = "IMAGE_SEARCH_PRECISION"
COMPILE = "IMAGE_SEARCH_COMPILE"
FORWARD_PROCESS = "IMAGE_SEARCH_FORWARD_PROCESS"
INDEX_TYPE = "IMAGE_SEARCH_INDEX_TYPE"
INDEX_PARAMS = "IMAGE_SEARCH_INDEX_PARAMS"
SEARCH_PARAMS = "IMAGE_SEARCH_SEARCH_PARAMS"
FILTER_COLUMNS = "IMAGE_SEARCH_FILTER_COLUMNS"
MILVUS_TIMEOUT = "IMAGE_SEARCH_MILVUS_TIMEOUT_S"
LOG_LEVEL = "LOG_LEVEL"
LOG_FORMAT = "LOG_FORMAT"
SHARD_INDEX = "JOB_COMPLETION_INDEX"
NAMESPACE_HEADER = "IMAGE_SEARCH_NAMESPACE_HEADER"
SEARCH_CONSISTENCY = "IMAGE_SEARCH_SEARCH_CONSISTENCY"
UI = "IMAGE_SEARCH_UI"

# Taken once, at first import of the package, and blanked for pymilvus (see above).
_legacy_milvus_uri = os.environ.get(LEGACY_MILVUS_URI, "")
os.environ[LEGACY_MILVUS_URI] = ""


def milvus_uri(default: str) -> str:
    """`IMAGE_SEARCH_MILVUS_URI`, else the `MILVUS_URI` this process started with, else `default`."""
    return os.environ.get(MILVUS_URI) or os.environ.get(LEGACY_MILVUS_URI) or _legacy_milvus_uri or default


def milvus_token() -> str | None:
    return os.environ.get(MILVUS_TOKEN) or None
