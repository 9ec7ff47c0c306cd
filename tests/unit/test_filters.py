"""Filter validation: what reaches Milvus is rebuilt from a parse, and only metadata fields can be named."""

import pytest

from predictor.errors import InvalidRequest
from predictor.index.filters import (
    MAX_EXPRESSION_LENGTH,
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    FilterError,
    validate_filter,
)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ('metadata["category"] == "birds"', 'metadata["category"] == "birds"'),
        (
            'metadata["category"] == "birds" and metadata["price"] < 20',
            '(metadata["category"] == "birds" and metadata["price"] < 20)',
        ),
        ("metadata['a'] == 'it\\'s'", 'metadata["a"] == "it\'s"'),
        ('metadata["c"] in ["red", "blue"]', '(metadata["c"] == "red" or metadata["c"] == "blue")'),
        ('metadata["c"] not in [1, 2.5]', '(metadata["c"] != 1 and metadata["c"] != 2.5)'),
        ('10 <= metadata["p"] < 20', '(metadata["p"] >= 10 and metadata["p"] < 20)'),
        ('5 > metadata["p"]', 'metadata["p"] < 5'),
        ('!(metadata["a"] > -1) || metadata["b"] != true', '(not (metadata["a"] > -1) or metadata["b"] != true)'),
        ('NOT metadata["tags"][0] LIKE "red%"', 'not (metadata["tags"][0] like "red%")'),
        ('JSON_CONTAINS_ANY(metadata["t"], ["a", 2])', 'json_contains_any(metadata["t"], ["a", 2])'),
        ('json_contains(metadata["t"], "sale")', 'json_contains(metadata["t"], "sale")'),
        ('exists metadata["a"]["b"]', 'exists metadata["a"]["b"]'),
        ('metadata["é"] == "ü"', 'metadata["é"] == "ü"'),
    ],
)
def test_accepted_filters_are_rewritten_from_their_parse(given, sent):
    assert validate_filter(given) == sent


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ('id == "x"', "'id' is not a metadata field"),
        ("vector != 0", "'vector' is not a metadata field"),
        ('namespace == "other"', "'namespace' is not a metadata field"),
        ('uri like "/%"', "'uri' is not a metadata field"),
        ('metadata["a"] == 1 or key == "x"', "'key' is not a metadata field"),
        ("metadata == 1", "name a field inside metadata"),
        ("metadata[0] == 1", "expected a field name in quotes"),
        ('metadata["a"] + 1 < 3', "unexpected character '+'"),
        ('metadata["a"] == metadata["b"]', "compare a field with a value"),
        ('metadata["a"] ==', "expected a value"),
        ('(metadata["a"] == 1', 'expected ")"'),
        ('metadata["a"] == 1 metadata["b"] == 2', 'expected "and", "or" or the end'),
        ("", "the expression is empty"),
        ("1 == 1", "expected a metadata field"),
        ('metadata["a"] < true', "compares numbers or strings"),
        ('metadata["a"] like 5', "like needs a pattern in quotes"),
        ('metadata["a"] in []', "expected a value"),
        ('metadata["a"] == 99999999999999999999', "too large"),
        ('metadata["a"] == "line\nbreak"', "control character"),
        ('metadata["a"] == "\\x41"', "unknown escape"),
        ("sleep(1)", "'sleep' is not a metadata field"),
        ('array_length(metadata["t"]) == 2', "'array_length' is not a metadata field"),
        ('1 == metadata["a"] < 2', "only <, <=, > and >= make a range"),
        ("(" * (MAX_FILTER_DEPTH + 1) + 'metadata["a"] == 1' + ")" * (MAX_FILTER_DEPTH + 1), "nests deeper"),
        ("not " * (MAX_FILTER_DEPTH + 1) + 'metadata["a"] == 1', "nests deeper"),
        ('metadata["a"] == "' + "x" * MAX_FILTER_LENGTH + '"', f"the limit is {MAX_FILTER_LENGTH}"),
        (None, "filter must be a string"),
        (f'metadata["{"f" * 500}"] in [{",".join(["1"] * 700)}]', f"the limit is {MAX_EXPRESSION_LENGTH}"),
    ],
)
def test_refused_filters_say_what_is_wrong(given, problem):
    with pytest.raises(FilterError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        validate_filter(given)


def test_a_refused_filter_is_a_bad_request_that_says_where():
    with pytest.raises(InvalidRequest) as refused:
        validate_filter('metadata["a"] == 1 and id == 2')
    assert "at position 23" in str(refused.value)
