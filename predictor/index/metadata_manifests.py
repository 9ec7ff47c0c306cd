"""Metadata manifests: JSON Lines or CSV files of fields to attach to images, checked before anything is written.

Each row names one image, by `path` (relative to the SOURCE directory it is found under, or absolute) or by `id` (its
content SHA-256, or an id given at indexing); a row with both gives that image the id. Every other key or column is a
metadata field. In JSON Lines values keep their JSON type, and `null` means "no such field" (and removes it in
`metadata set`); in CSV, a cell that reads as a number becomes one, and an empty cell is no field.
"""

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from predictor.index.schema import ID_MAX_LENGTH, METADATA_MAX_BYTES

__all__ = ["InvalidManifest", "Manifest", "ManifestRow", "read_manifest"]

NAMING_KEYS = ("path", "id")
_INTEGER = re.compile(r"-?(0|[1-9]\d*)")
_DECIMAL = re.compile(r"-?(0|[1-9]\d*)\.\d+")


class InvalidManifest(ValueError):
    """The manifest cannot be used as it is; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class ManifestRow:
    line: int
    path: str | None
    id: str | None
    fields: dict[str, Any]

    def describe(self) -> str:
        return f"line {self.line} ({'path ' + repr(self.path) if self.path else 'id ' + repr(self.id)})"


@dataclass
class Manifest:
    source: Path
    rows: list[ManifestRow]
    _by_path: dict[str, ManifestRow] = field(default_factory=dict, repr=False)
    _by_id: dict[str, ManifestRow] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for row in self.rows:
            if row.path is not None:
                self._by_path[row.path] = row
            elif row.id is not None:
                self._by_id[row.id] = row

    def for_image(self, names: list[str], content_id: str) -> ManifestRow | None:
        """The row for an image found under any of `names` (relative and absolute paths), or with this content id."""
        for name in names:
            row = self._by_path.get(_normal_path(name))
            if row is not None:
                return row
        return self._by_id.get(content_id)


def _normal_path(text: str) -> str:
    return str(PurePosixPath(text.replace("\\", "/"))).removeprefix("./")


def _csv_value(text: str) -> Any:
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        return float(text)
    return text


def _records(path: Path, text: str) -> list[tuple[int, dict]]:
    json_lines = path.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{")
    if json_lines:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidManifest(f"{path} line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise InvalidManifest(f"{path} line {number}: each line must be a JSON object")
            records.append((number, {key: value for key, value in record.items()}))
        return records
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not set(NAMING_KEYS) & set(reader.fieldnames):
        raise InvalidManifest(f"{path}: a CSV manifest needs a header row with a 'path' or an 'id' column")
    if len(set(reader.fieldnames)) != len(reader.fieldnames) or "" in reader.fieldnames:
        raise InvalidManifest(f"{path}: the CSV header has an empty or repeated column name")
    records = []
    for row in reader:
        number = reader.line_num
        if None in row:
            raise InvalidManifest(f"{path} line {number}: more cells than the header has columns")
        records.append((number, {key: _csv_value(value) for key, value in row.items() if value not in (None, "")}))
    return records


def _row(path: Path, number: int, record: dict) -> ManifestRow:
    where = f"{path} line {number}"
    naming = {}
    for key in NAMING_KEYS:
        value = record.pop(key, None)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise InvalidManifest(f"{where}: {key!r} must be a non-empty string, got {value!r}")
        naming[key] = value
    if not naming:
        raise InvalidManifest(f"{where}: the row names no image; give it a 'path' or an 'id'")
    if len(naming.get("id", "")) > ID_MAX_LENGTH:
        raise InvalidManifest(f"{where}: the id is longer than {ID_MAX_LENGTH} characters")
    for key in record:
        if not isinstance(key, str) or not key:
            raise InvalidManifest(f"{where}: field names must be non-empty strings")
    size = len(json.dumps(record, ensure_ascii=False).encode())
    if size > METADATA_MAX_BYTES:
        raise InvalidManifest(
            f"{where}: the fields take {size} bytes as JSON; Milvus stores at most {METADATA_MAX_BYTES}"
        )
    image_path = _normal_path(naming["path"]) if "path" in naming else None
    return ManifestRow(number, image_path, naming.get("id"), record)


def read_manifest(path: Path) -> Manifest:
    """Read and check a whole manifest; `InvalidManifest` says what is wrong before anything has been written."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidManifest(f"{path}: not UTF-8 text") from None
    records = _records(path, text)
    if not records:
        raise InvalidManifest(f"{path}: the manifest holds no rows")
    rows = [_row(path, number, record) for number, record in records]
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        for key, value in (("path", row.path), ("id", row.id)):
            if value is None:
                continue
            if (key, value) in seen:
                first = seen[(key, value)]
                raise InvalidManifest(f"{path} line {row.line}: {key} {value!r} is named again (first on line {first})")
            seen[(key, value)] = row.line
    return Manifest(path, rows)
