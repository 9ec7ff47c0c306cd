"""Filter columns: metadata keys a collection also keeps in typed columns of its own, so that Milvus filters on them
without parsing every row's JSON.

A Milvus 2.3 server evaluates `metadata["shop"] == "a"` by parsing each row's `metadata` JSON: about 30 ms per search
at 200,000 rows on 2 cores, whatever the index. The same test on an INT64 or VARCHAR column takes about 5 ms
(docs/search-index.md). A collection made with `--filter-columns shop:string,year:int` keeps `metadata["shop"]` in
the column `filter_shop` as well, and the filter a user writes over `metadata[...]` is rewritten to read the column.
The metadata JSON stays as it was: hits return it, and every other filter still reads it.

The rewrite gives exactly the rows the JSON filter gives on the Milvus in use, and the two kinds read a missing or
null key differently. A column holds a marker for "missing" (the empty string for strings, whose values are stored
behind a "=" so that no value is empty; the smallest INT64 but one for integers), and a comparison reads the marker
as the kind in use reads a missing key:

- the Milvus server: `==` and the orderings are false, `!=` is true, and `not` turns each over. So `==` and `!=`
  read the column as it is, and an ordering is `(column != MISSING and column <op> value)`;
- milvus-lite: every comparison is *unknown*, and so is its `not`: neither `metadata["shop"] == "a"` nor
  `not (metadata["shop"] == "a")` keeps such a row. Under an even number of `not`s a comparison is
  `(column != MISSING and column <op> value)`, under an odd number `(column == MISSING or column <op> value)`, which
  the `not`s above turn into "false" for a missing key either way.

A value of another type than its column's (a number for a string column, 5.5 or true for an int column) is refused
when the row is written: the JSON would compare it by other rules than the column, and the two would disagree.
Comparisons the columns cannot answer the same way (`like`, `exists`, the json_contains functions, a list position,
a value of the other type) keep reading the JSON.
"""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from predictor.errors import InvalidRequest

__all__ = [
    "COLUMN_PREFIX",
    "FilterColumn",
    "MAX_FILTER_COLUMNS",
    "MISSING_INT",
    "STRING_MAX_LENGTH",
    "columns_of",
    "describe",
    "parse_filter_columns",
]

COLUMN_PREFIX = "filter_"
MAX_FILTER_COLUMNS = 16
STRING_MAX_LENGTH = 1024
MISSING_STRING = ""
STRING_MARK = "="
# A filter's numbers go down to -(2**63 - 1); a literal equal to the marker keeps reading the JSON.
MISSING_INT = -(2**63 - 1)
KINDS = ("string", "int")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class FilterColumn:
    key: str
    kind: str

    @property
    def column(self) -> str:
        return COLUMN_PREFIX + self.key

    @property
    def path(self) -> str:
        """The field as the filter parser writes it."""
        return f'metadata["{self.key}"]'

    def stored(self, metadata: Mapping[str, Any]) -> str | int:
        """This column's value for a row with `metadata`; `InvalidRequest` for a value of another type."""
        value = metadata.get(self.key)
        if value is None:
            return MISSING_STRING if self.kind == "string" else MISSING_INT
        if self.kind == "string":
            if isinstance(value, str) and len(value.encode()) < STRING_MAX_LENGTH:
                return STRING_MARK + value
        elif isinstance(value, float) and value.is_integer() and MISSING_INT < value < 2**63:
            return int(value)
        elif isinstance(value, int) and not isinstance(value, bool) and MISSING_INT < value < 2**63:
            return value
        wanted = (
            f"a string under {STRING_MAX_LENGTH} bytes"
            if self.kind == "string"
            else f"a whole number between {MISSING_INT + 1} and {2**63 - 1}"
        )
        raise InvalidRequest(
            f"metadata[{self.key!r}] is {value!r}; this collection keeps {self.key!r} in a filter column, which "
            f"takes {wanted} or null"
        )

    def condition(self, operator: str, value: object, negated: bool, three_valued: bool) -> str | None:
        """The column's form of `path operator value` under `negated` (an odd number of `not`s above it) on a Milvus
        that reads a missing key as unknown (`three_valued`, milvus-lite) or as false (the server), or None when the
        column cannot answer it the way the JSON does."""
        if self.kind == "string" and isinstance(value, str):
            literal, missing = _quoted(STRING_MARK + value), _quoted(MISSING_STRING)
        elif self.kind == "int" and isinstance(value, int) and not isinstance(value, bool) and value != MISSING_INT:
            literal, missing = str(value), str(MISSING_INT)
        else:
            return None
        comparison = f"{self.column} {operator} {literal}"
        if not three_valued:
            return comparison if operator in ("==", "!=") else f"({self.column} != {missing} and {comparison})"
        if negated:
            return f"({self.column} == {missing} or {comparison})"
        if operator == "==":
            return comparison
        return f"({self.column} != {missing} and {comparison})"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def parse_filter_columns(text: str, flag: str = "--filter-columns") -> tuple[FilterColumn, ...]:
    """`KEY:KIND,...` (KIND string or int) as columns; ValueError naming `flag` if it is not that."""
    columns: list[FilterColumn] = []
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, _, kind = item.partition(":")
        key, kind = key.strip(), kind.strip().lower()
        if not _KEY.fullmatch(key):
            raise ValueError(
                f"{flag}: {key!r} is not a metadata key a column can hold (letters, digits and _, not starting "
                "with a digit, at most 64)"
            )
        if kind not in KINDS:
            raise ValueError(f"{flag}: {item!r} needs a kind, string or int, as in {key}:string")
        if any(column.key == key for column in columns):
            raise ValueError(f"{flag}: {key!r} is named twice")
        columns.append(FilterColumn(key, kind))
    if len(columns) > MAX_FILTER_COLUMNS:
        raise ValueError(f"{flag}: {len(columns)} columns; at most {MAX_FILTER_COLUMNS}")
    return tuple(columns)


def describe(columns: Iterable[FilterColumn]) -> str:
    return ",".join(f"{column.key}:{column.kind}" for column in columns)


def columns_of(fields: Iterable[Mapping[str, Any]]) -> tuple[FilterColumn, ...]:
    """The filter columns among a collection's fields (as Milvus describes them)."""
    kinds = {"VARCHAR": "string", "INT64": "int"}
    columns = []
    for field in fields:
        name = str(field.get("name", ""))
        kind = kinds.get(getattr(field.get("type"), "name", str(field.get("type"))))
        if name.startswith(COLUMN_PREFIX) and kind:
            columns.append(FilterColumn(name[len(COLUMN_PREFIX) :], kind))
    return tuple(columns)
