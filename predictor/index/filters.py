"""Search filters: a user's boolean expression over metadata fields, checked and rewritten before Milvus sees it.

The accepted language is the part of Milvus's expression syntax that both milvus-lite 3.2.2 and the Milvus 2.3 server
evaluate the same way (but for a row without the field under `!=` and `not`: docs/api.md), over the `metadata` JSON
field only::

    metadata["category"] == "birds" and metadata["price"] < 20
    not (metadata["tags"][0] like "red%") or 10 <= metadata["price"] < 20
    metadata["colour"] in ["red", "blue"]            # rewritten as == ... or == ..., which milvus-lite also takes
    json_contains(metadata["tags"], "sale")          # also json_contains_all / json_contains_any with a list
    exists metadata["price"]

Anything else is refused with a message that names the problem and where it is: other columns (`id`, `vector`,
`namespace`, ...), arithmetic, functions other than the JSON ones, comparisons between two fields. The output is
rebuilt from the parsed expression (every group parenthesised, every string re-quoted), so no text of the user's
reaches Milvus unparsed. Pure and self-contained, so that it can be fuzzed.

A collection with filter columns gets the checked expression once more through `with_filter_columns`, which makes
the comparisons those columns can answer read them instead of the JSON (filter_columns.py).
"""

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from predictor.errors import InvalidRequest
from predictor.index.filter_columns import FilterColumn

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "FilterError",
    "validate_filter",
    "with_filter_columns",
]

MAX_FILTER_LENGTH = 2048
MAX_FILTER_DEPTH = 32
# `in [...]` is rewritten as one comparison per value, so a 2 KiB filter could otherwise reach Milvus as a megabyte
# (a long field name tested against a thousand values).
MAX_EXPRESSION_LENGTH = 8 * MAX_FILTER_LENGTH
FIELD = "metadata"
_INT64 = 2**63

_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ORDERING = {"<", "<=", ">", ">="}
_JSON_FUNCTIONS = {"json_contains": "value", "json_contains_all": "list", "json_contains_any": "list"}
_KEYWORDS = {"and", "or", "not", "in", "like", "true", "false", "exists"}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<operator>==|!=|<=|>=|&&|\|\||[<>!\-])
  | (?P<punctuation>[()\[\],])
    """,
    re.VERBOSE,
)
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


class FilterError(InvalidRequest):
    """The filter is not one this service accepts; the message says what is wrong and where."""


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, word, operator, punctuation, end
    text: str
    position: int
    value: object = None


def _unquote(text: str, position: int) -> str:
    out, index, body = [], 0, text[1:-1]
    while index < len(body):
        char = body[index]
        if char == "\\":
            escaped = body[index + 1]
            if escaped not in _ESCAPES:
                raise FilterError(f"filter: unknown escape \\{escaped} in the string at position {position}")
            out.append(_ESCAPES[escaped])
            index += 2
            continue
        if ord(char) < 32:
            raise FilterError(f"filter: the string at position {position} holds a control character")
        out.append(char)
        index += 1
    return "".join(out)


def _number(text: str, position: int) -> int | float:
    if re.fullmatch(r"\d+", text):
        number = int(text)
        if number >= _INT64:
            raise FilterError(f"filter: the number at position {position} is too large")
        return number
    value = float(text)
    if not math.isfinite(value):
        raise FilterError(f"filter: the number at position {position} is too large")
    return value


def _tokens(text: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise FilterError(f"filter: unexpected character {text[position]!r} at position {position}")
        kind, token_text = match.lastgroup or "", match.group()
        if kind == "string":
            tokens.append(_Token(kind, token_text, position, _unquote(token_text, position)))
        elif kind == "number":
            tokens.append(_Token(kind, token_text, position, _number(token_text, position)))
        elif kind == "word":
            tokens.append(_Token(kind, token_text.lower() if token_text.lower() in _KEYWORDS else token_text, position))
        elif kind != "space":
            tokens.append(_Token(kind, token_text, position))
        position = match.end()
    tokens.append(_Token("end", "", position))
    return tokens


def _literal_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


class _Parser:
    def __init__(
        self, text: str, columns: Mapping[str, FilterColumn] | None = None, three_valued: bool = False
    ) -> None:
        self.tokens = _tokens(text)
        self.index = 0
        self.depth = 0
        self.columns = columns or {}
        self.three_valued = three_valued
        self.negations = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.current
        self.index += 1
        return token

    def at(self, kind: str, *texts: str) -> bool:
        return self.current.kind == kind and (not texts or self.current.text in texts)

    def expect(self, kind: str, text: str, what: str) -> _Token:
        if not self.at(kind, text):
            raise self.error(f"expected {what}")
        return self.advance()

    def error(self, problem: str, say_found: bool = True) -> FilterError:
        token = self.current
        found = "the end of the filter" if token.kind == "end" else repr(token.text)
        where = f"found {found} at position {token.position}" if say_found else f"at position {token.position}"
        return FilterError(f"filter: {problem} ({where})")

    def parse(self) -> str:
        if self.current.kind == "end":
            raise FilterError("filter: the expression is empty")
        expression = self.disjunction()
        if self.current.kind != "end":
            raise self.error('expected "and", "or" or the end of the filter')
        return expression

    def disjunction(self) -> str:
        parts = [self.conjunction()]
        while self.at("word", "or") or self.at("operator", "||"):
            self.advance()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def conjunction(self) -> str:
        parts = [self.negation()]
        while self.at("word", "and") or self.at("operator", "&&"):
            self.advance()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"

    def negation(self) -> str:
        if self.at("word", "not") or self.at("operator", "!"):
            self.advance()
            self.negations += 1
            try:
                return f"not ({self.nested(self.negation)})"
            finally:
                self.negations -= 1
        return self.primary()

    def nested(self, parse) -> str:
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise self.error(f"the filter nests deeper than {MAX_FILTER_DEPTH} levels")
        try:
            return parse()
        finally:
            self.depth -= 1

    def primary(self) -> str:
        token = self.current
        if self.at("punctuation", "("):
            self.advance()
            inner = self.nested(self.disjunction)
            self.expect("punctuation", ")", '")"')
            return inner
        if self.at("word", "exists"):
            self.advance()
            return f"exists {self.field()}"
        if token.kind == "word" and token.text.lower() in _JSON_FUNCTIONS:
            return self.json_function()
        if self.at("word", FIELD):
            return self.field_condition()
        if self.starts_literal():
            return self.literal_first_comparison()
        raise self.unexpected()

    def unexpected(self, expected: str = f'a condition such as {FIELD}["category"] == "birds"') -> FilterError:
        token = self.current
        if token.kind == "word" and token.text not in _KEYWORDS:
            return self.error(
                f'{token.text!r} is not a metadata field; a filter may only name fields written {FIELD}["name"]',
                say_found=False,
            )
        return self.error(f"expected {expected}")

    def field(self) -> str:
        if not self.at("word", FIELD):
            raise self.unexpected(f'a metadata field such as {FIELD}["category"]')
        self.advance()
        if not self.at("punctuation", "["):
            raise self.error(f'name a field inside {FIELD}, as in {FIELD}["category"]')
        path = FIELD
        while self.at("punctuation", "["):
            self.advance()
            token = self.advance()
            if token.kind == "string":
                path += f"[{_literal_text(token.value)}]"
            elif token.kind == "number" and isinstance(token.value, int) and path != FIELD:
                path += f"[{token.value}]"
            else:
                self.index -= 1
                raise self.error('expected a field name in quotes, as in ["name"], or after it a list position [0]')
            self.expect("punctuation", "]", '"]"')
        return path

    def starts_literal(self) -> bool:
        return self.current.kind in ("string", "number") or self.at("word", "true", "false") or self.at("operator", "-")

    def literal(self) -> object:
        token = self.current
        if self.at("operator", "-"):
            self.advance()
            if self.current.kind != "number":
                raise self.error("expected a number after '-'")
            number = self.advance().value
            assert isinstance(number, int | float)  # what _tokens makes of a number token
            return -number
        if token.kind in ("string", "number"):
            self.advance()
            return token.value
        if self.at("word", "true", "false"):
            self.advance()
            return token.text == "true"
        raise self.error("expected a value (a string in quotes, a number, true or false)")

    def literal_list(self) -> list[object]:
        self.expect("punctuation", "[", 'a list such as ["a", "b"]')
        values = [self.literal()]
        while self.at("punctuation", ","):
            self.advance()
            values.append(self.literal())
        self.expect("punctuation", "]", '"," or "]"')
        return values

    def comparison_operator(self) -> str:
        if self.current.kind == "operator" and self.current.text in _COMPARISONS:
            return self.advance().text
        raise self.error("expected a comparison (==, !=, <, <=, >, >=, in, not in, like)")

    def checked(self, operator: str, value: object) -> str:
        if operator in _ORDERING and isinstance(value, bool):
            raise self.error(f"{operator} compares numbers or strings, not true or false")
        return _literal_text(value)

    def comparison(self, path: str, operator: str, value: object) -> str:
        literal = self.checked(operator, value)
        column = self.columns.get(path)
        if column is not None:
            rewritten = column.condition(operator, value, self.negations % 2 == 1, self.three_valued)
            if rewritten is not None:
                return rewritten
        return f"{path} {operator} {literal}"

    def field_condition(self) -> str:
        path = self.field()
        if self.at("word", "like"):
            self.advance()
            if self.current.kind != "string":
                raise self.error("like needs a pattern in quotes")
            return f"{path} like {_literal_text(self.advance().value)}"
        negated = self.at("word", "not")
        if negated or self.at("word", "in"):
            self.advance()
            if negated:
                self.expect("word", "in", '"in" after "not"')
            values = self.literal_list()
            operator, joiner = ("!=", " and ") if negated else ("==", " or ")
            return "(" + joiner.join(self.comparison(path, operator, value) for value in values) + ")"
        operator = self.comparison_operator()
        if self.at("word", FIELD):
            raise self.error("compare a field with a value, not with another field")
        return self.comparison(path, operator, self.literal())

    def literal_first_comparison(self) -> str:
        value = self.literal()
        operator = self.comparison_operator()
        path = self.field()
        first = self.comparison(path, _FLIPPED[operator], value)
        if self.current.kind == "operator" and self.current.text in _ORDERING:
            if operator not in _ORDERING:
                raise self.error("only <, <=, > and >= make a range such as 1 < field < 5")
            second_operator = self.advance().text
            return f"({first} and {self.comparison(path, second_operator, self.literal())})"
        return first

    def json_function(self) -> str:
        name = self.advance().text.lower()
        self.expect("punctuation", "(", f'"(" after {name}')
        path = self.field()
        self.expect("punctuation", ",", '","')
        if _JSON_FUNCTIONS[name] == "list":
            argument = "[" + ", ".join(_literal_text(value) for value in self.literal_list()) + "]"
        else:
            argument = _literal_text(self.literal())
        self.expect("punctuation", ")", '")"')
        return f"{name}({path}, {argument})"


def validate_filter(text: object) -> str:
    """The Milvus expression for a user's filter; `FilterError` (a 400) naming the problem if it is not accepted."""
    if not isinstance(text, str):
        raise FilterError(f"filter must be a string, got {type(text).__name__}")
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"filter is {len(text)} characters long; the limit is {MAX_FILTER_LENGTH}")
    expression = _Parser(text).parse()
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise FilterError(
            f"filter expands to {len(expression)} characters for Milvus (each value of `in [...]` is one comparison); "
            f"the limit is {MAX_EXPRESSION_LENGTH}: test fewer values, or a shorter field name"
        )
    return expression


@functools.lru_cache(maxsize=1024)
def with_filter_columns(expression: str, columns: tuple[FilterColumn, ...], three_valued: bool) -> str:
    """`expression` (as `validate_filter` made it) reading the collection's filter columns wherever they answer the
    same as the JSON on the Milvus in use (filter_columns.py; `three_valued`: milvus-lite). The service's own
    expressions over other fields (`uri`, the keys) are not in the filter language, and pass as they are."""
    if not columns or FIELD not in expression:
        return expression
    try:
        return _Parser(expression, {column.path: column for column in columns}, three_valued).parse()
    except FilterError:
        return expression
