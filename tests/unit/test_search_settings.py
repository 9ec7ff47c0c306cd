"""The search API's server settings from flags and environment, checked at start-up."""

import argparse

import pytest

from predictor.cli.options import add_search_arguments, search_settings
from predictor.index.search_options import SearchSettings


def parse(argv: list[str]) -> SearchSettings:
    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    return search_settings(parser.parse_args(argv))


def test_searches_run_at_bounded_consistency_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("IMAGE_SEARCH_SEARCH_CONSISTENCY", raising=False)
    assert parse([]).consistency == "Bounded"
    assert parse(["--search-consistency", "Strong"]).consistency == "Strong"
    monkeypatch.setenv("IMAGE_SEARCH_SEARCH_CONSISTENCY", "Eventually")
    assert parse([]).consistency == "Eventually"


def test_an_unknown_consistency_level_is_refused_at_start_saying_which_exist(monkeypatch):
    monkeypatch.setenv("IMAGE_SEARCH_SEARCH_CONSISTENCY", "Sometimes")
    with pytest.raises(ValueError, match="--search-consistency must be one of Strong, Bounded, Eventually"):
        parse([])
