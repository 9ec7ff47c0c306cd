"""`image-search eval --compare --option NAME` compares only the named options, always against the first."""

import pytest

from predictor.evaluation.options import built_in_options


def test_every_option_is_compared_by_default_and_names_are_unique():
    names = [option.name for option in built_in_options()]
    assert len(names) == len(set(names)) and "lite0 letterbox 288 gem + centre" in names


def test_named_options_are_compared_against_the_first_in_the_built_in_order():
    first = built_in_options()[0].name
    chosen = built_in_options(["lite0 letterbox 288 gem + centre", "lite2 letterbox 240 gem"])
    assert [option.name for option in chosen] == [first, "lite2 letterbox 240 gem", "lite0 letterbox 288 gem + centre"]


def test_an_unknown_option_name_is_refused_with_the_name():
    with pytest.raises(ValueError, match="'lite9 letterbox'"):
        built_in_options(["lite9 letterbox"])
