"""Index settings: the measured defaults, validation a user can act on, and the bounded per-request effort."""

import pytest

from predictor.config import add_milvus_arguments, milvus_settings
from predictor.index_config import IndexConfig, InvalidIndexConfig, for_collection, parse_params


def test_the_default_is_ivf_flat_with_the_measured_parameters():
    config = IndexConfig()
    assert config.index_params() == {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"nlist": 1024}}
    assert config.search_request(10) == {"metric_type": "COSINE", "params": {"nprobe": 32}}
    assert (config.effort_param, config.effort_bounds, config.default_effort) == ("nprobe", (1, 1024), 32)


def test_effort_is_bounded_and_hnsw_never_searches_fewer_candidates_than_top_k():
    config = IndexConfig("HNSW", search_params={"ef": 32})
    assert config.search_request(10, effort=200)["params"] == {"ef": 200}
    assert config.search_request(100)["params"] == {"ef": 100}
    with pytest.raises(InvalidIndexConfig, match=r"effort must be an integer in \[1, 2048\], got 5000"):
        config.search_request(10, effort=5000)
    with pytest.raises(InvalidIndexConfig, match="effort does not apply to a FLAT index"):
        IndexConfig("FLAT").search_request(10, effort=8)


def test_ivf_effort_cannot_scan_more_lists_than_the_index_has():
    config = IndexConfig("IVF_FLAT", {"nlist": 256})
    assert config.effort_bounds == (1, 256)
    with pytest.raises(InvalidIndexConfig, match="nprobe must be an integer in \\[1, 256\\]"):
        IndexConfig("IVF_FLAT", {"nlist": 256}, {"nprobe": 512})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("HNSWX",), "must be one of FLAT, AUTOINDEX, HNSW, IVF_FLAT, IVF_SQ8"),
        (("HNSW", {"nlist": 8}), "HNSW build: unknown parameter.s. nlist; known: M, efConstruction"),
        (("HNSW", {"M": 0}), r"M must be an integer in \[2, 2048\], got 0"),
        (("FLAT", {}, {"ef": 8}), "FLAT search: unknown parameter.s. ef; known: none"),
    ],
)
def test_bad_settings_say_what_to_change(args, message):
    with pytest.raises(InvalidIndexConfig, match=message):
        IndexConfig(*args)


def test_params_parse_from_flags_or_json_and_bad_text_is_explained():
    assert parse_params("M=32, efConstruction=400", "--index-params") == {"M": 32, "efConstruction": 400}
    assert parse_params('{"nlist": 4096}', "--index-params") == {"nlist": 4096}
    assert parse_params("", "--index-params") == {}
    with pytest.raises(InvalidIndexConfig, match="--search-params: ef must be an integer, got 'lots'"):
        parse_params("ef=lots", "--search-params")
    with pytest.raises(InvalidIndexConfig, match="expected NAME=INTEGER"):
        parse_params("ef", "--search-params")


def test_a_collection_keeps_the_index_it_was_built_with():
    configured = IndexConfig("HNSW")
    assert for_collection(configured, {"index_type": "HNSW", "M": "16"}) is configured
    configured = IndexConfig()
    older = for_collection(configured, {"index_type": "IVF_FLAT", "nlist": "512", "metric_type": "COSINE"})
    assert (older.index_type, older.build_params, older.search_params) == ("IVF_FLAT", {"nlist": 512}, {"nprobe": 32})
    assert for_collection(configured, {"index_type": "DISKANN"}).search_request(10)["params"] == {}
    few_lists = for_collection(IndexConfig(search_params={"nprobe": 64}), {"index_type": "IVF_FLAT", "nlist": "16"})
    assert few_lists.search_params == {"nprobe": 16} and few_lists.effort_bounds == (1, 16)


def test_flags_and_environment_build_the_settings(monkeypatch):
    import argparse

    monkeypatch.setenv("IMAGE_SEARCH_INDEX_TYPE", "IVF_SQ8")
    parser = argparse.ArgumentParser()
    add_milvus_arguments(parser)
    settings = milvus_settings(parser.parse_args(["--index-params", "nlist=2048", "--search-params", "nprobe=64"]))
    assert settings.index == IndexConfig("IVF_SQ8", {"nlist": 2048}, {"nprobe": 64})
