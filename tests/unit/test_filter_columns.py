"""Filter columns: the `--filter-columns` setting, the value each row's column holds, and how a filter is rewritten
to read the columns on each Milvus kind (the rows it keeps are checked against real Milvus in the e2e tests)."""

import pytest

from predictor.errors import InvalidRequest
from predictor.index.filter_columns import (
    MAX_FILTER_COLUMNS,
    MISSING_INT,
    FilterColumn,
    columns_of,
    parse_filter_columns,
)
from predictor.index.filters import validate_filter, with_filter_columns

SHOP, YEAR = FilterColumn("shop", "string"), FilterColumn("year", "int")
COLUMNS = (SHOP, YEAR)


def test_the_setting_names_keys_and_kinds():
    assert parse_filter_columns(" shop:string , year:INT ") == COLUMNS
    assert parse_filter_columns("") == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("shop", "needs a kind"),
        ("shop:float", "needs a kind"),
        ("9lives:int", "is not a metadata key"),
        ("a-b:int", "is not a metadata key"),
        ("shop:string,shop:int", "named twice"),
        (",".join(f"k{i}:int" for i in range(MAX_FILTER_COLUMNS + 1)), f"at most {MAX_FILTER_COLUMNS}"),
    ],
)
def test_a_bad_setting_names_the_flag_and_the_problem(text, problem):
    with pytest.raises(ValueError, match=problem) as error:
        parse_filter_columns(text)
    assert str(error.value).startswith("--filter-columns")


def test_a_row_stores_its_value_or_the_missing_marker():
    assert SHOP.stored({"shop": "a"}) == "=a" and SHOP.stored({"shop": ""}) == "="
    assert SHOP.stored({}) == "" and SHOP.stored({"shop": None}) == ""
    assert YEAR.stored({"year": 2005}) == 2005 and YEAR.stored({"year": 2010.0}) == 2010
    assert YEAR.stored({}) == MISSING_INT and YEAR.stored({"year": None}) == MISSING_INT


@pytest.mark.parametrize(
    ("column", "value"),
    [(SHOP, 5), (SHOP, ["a"]), (SHOP, "x" * 2000), (YEAR, "2005"), (YEAR, 2005.5), (YEAR, True), (YEAR, 2**63)],
)
def test_a_value_of_another_type_is_refused_with_its_key(column, value):
    with pytest.raises(InvalidRequest, match=f"metadata\\['{column.key}'\\] is"):
        column.stored({column.key: value})


def rewritten(text: str, three_valued: bool) -> str:
    return with_filter_columns(validate_filter(text), COLUMNS, three_valued)


def test_on_the_server_equality_reads_the_column_and_an_ordering_skips_missing_rows():
    assert rewritten('metadata["shop"] == "a"', False) == 'filter_shop == "=a"'
    assert rewritten('not (metadata["shop"] != "a")', False) == 'not (filter_shop != "=a")'
    assert rewritten('metadata["year"] < 2000', False) == f"(filter_year != {MISSING_INT} and filter_year < 2000)"


def test_on_milvus_lite_a_missing_key_stays_unknown_under_not():
    assert rewritten('metadata["shop"] == "a"', True) == 'filter_shop == "=a"'
    assert rewritten('metadata["shop"] != "a"', True) == '(filter_shop != "" and filter_shop != "=a")'
    assert rewritten('not (metadata["shop"] == "a")', True) == 'not ((filter_shop == "" or filter_shop == "=a"))'
    assert rewritten('not (not (metadata["year"] > 1))', True) == (
        f"not (not ((filter_year != {MISSING_INT} and filter_year > 1)))"
    )


@pytest.mark.parametrize(
    "text",
    [
        'metadata["shop"] == 5',
        'metadata["year"] == "2005"',
        'metadata["year"] < 2005.5',
        'metadata["year"] == true',
        f'metadata["year"] == {MISSING_INT}',
        'metadata["shop"] like "a%"',
        'exists metadata["shop"]',
        'metadata["shop"]["x"] == "a"',
        'metadata["other"] == "a"',
    ],
)
def test_what_a_column_cannot_answer_keeps_reading_the_json(text):
    for three_valued in (False, True):
        assert rewritten(text, three_valued) == validate_filter(text)


def test_the_services_own_expressions_pass_as_they_are():
    expression = 'uri == "a/b" or uri like "a/b/%"'
    assert with_filter_columns(expression, COLUMNS, False) == expression


def test_a_collection_description_gives_its_columns():
    fields = [
        {"name": "key", "type": "VARCHAR"},
        {"name": "metadata", "type": "JSON"},
        {"name": "filter_shop", "type": "VARCHAR"},
        {"name": "filter_year", "type": "INT64"},
    ]
    assert columns_of(fields) == COLUMNS
