"""Index settings: the measured defaults, validation a user can act on, and the bounded per-request effort."""

import pytest

from predictor.cli.options import add_milvus_arguments, milvus_settings
from predictor.errors import InvalidRequest
from predictor.index.vector_index import InvalidIndexSettings, VectorIndex, parse_params


def test_the_default_is_ivf_flat_with_the_measured_parameters():
    index = VectorIndex()
    assert index.index_params() == {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"nlist": 1024}}
    assert index.search_request(11) == {"metric_type": "COSINE", "params": {"nprobe": 32}}
    assert (index.effort_param, index.effort_bounds, index.default_effort) == ("nprobe", (1, 1024), 32)


def test_effort_is_bounded_and_hnsw_never_searches_fewer_candidates_than_the_hits_asked_for():
    index = VectorIndex("HNSW", search_params={"ef": 32})
    assert index.search_request(11, effort=200, hits=10)["params"] == {"ef": 200}
    assert index.search_request(101)["params"] == {"ef": 101}
    # The window holds one hit more than asked (a more-like-this query's own row); ef covers it.
    assert index.search_request(11, effort=10, hits=10)["params"] == {"ef": 11}
    with pytest.raises(InvalidRequest, match=r"parameter 'effort' must be an integer from 10 to 2048 .*HNSW.*got 5000"):
        index.search_request(11, effort=5000, hits=10)
    with pytest.raises(InvalidRequest, match=r"'effort' must be an integer from 30 to 2048 .*offset \+ top_k.*got 20"):
        index.check_effort(20, hits=30)
    with pytest.raises(InvalidRequest, match="parameter 'effort' does not apply to this collection's FLAT index"):
        VectorIndex("FLAT").search_request(11, effort=8)


def test_ivf_effort_cannot_scan_more_lists_than_the_index_has():
    index = VectorIndex("IVF_FLAT", {"nlist": 256})
    assert index.effort_bounds == (1, 256)
    assert index.effort_range(500) == (1, 256)
    with pytest.raises(InvalidRequest, match=r"from 1 to 256 for this collection's IVF_FLAT index \(its nprobe\)"):
        index.check_effort(257, hits=10)
    with pytest.raises(InvalidIndexSettings, match="nprobe must be an integer in \\[1, 256\\]"):
        VectorIndex("IVF_FLAT", {"nlist": 256}, {"nprobe": 512})


def test_the_model_metadata_describes_the_collections_effort():
    assert VectorIndex().effort_metadata() == {
        "type": "integer",
        "index_type": "IVF_FLAT",
        "search_parameter": "nprobe",
        "default": 32,
        "minimum": 1,
        "maximum": 1024,
    }
    assert VectorIndex("HNSW").effort_metadata()["minimum"] == "offset + top_k"
    assert VectorIndex("FLAT").effort_metadata()["applies"] is False


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
    with pytest.raises(InvalidIndexSettings, match=message):
        VectorIndex(*args)


def test_params_parse_from_flags_or_json_and_bad_text_is_explained():
    assert parse_params("M=32, efConstruction=400", "--index-params") == {"M": 32, "efConstruction": 400}
    assert parse_params('{"nlist": 4096}', "--index-params") == {"nlist": 4096}
    assert parse_params("", "--index-params") == {}
    with pytest.raises(InvalidIndexSettings, match="--search-params: ef must be an integer, got 'lots'"):
        parse_params("ef=lots", "--search-params")
    with pytest.raises(InvalidIndexSettings, match="expected NAME=INTEGER"):
        parse_params("ef", "--search-params")


def test_a_collection_keeps_the_index_it_was_built_with():
    configured = VectorIndex("HNSW")
    assert configured.of_collection({"index_type": "HNSW", "M": "16"}) is configured
    configured = VectorIndex()
    older = configured.of_collection({"index_type": "IVF_FLAT", "nlist": "512", "metric_type": "COSINE"})
    assert (older.index_type, older.params, older.search_params) == ("IVF_FLAT", {"nlist": 512}, {"nprobe": 32})
    assert configured.of_collection({"index_type": "DISKANN"}).search_request(11)["params"] == {}
    few_lists = VectorIndex(search_params={"nprobe": 64}).of_collection({"index_type": "IVF_FLAT", "nlist": "16"})
    assert few_lists.search_params == {"nprobe": 16} and few_lists.effort_bounds == (1, 16)


def test_flags_and_environment_build_the_settings(monkeypatch):
    import argparse

    monkeypatch.setenv("IMAGE_SEARCH_INDEX_TYPE", "IVF_SQ8")
    parser = argparse.ArgumentParser()
    add_milvus_arguments(parser)
    settings = milvus_settings(parser.parse_args(["--index-params", "nlist=2048", "--search-params", "nprobe=64"]))
    assert settings.index == VectorIndex("IVF_SQ8", {"nlist": 2048}, {"nprobe": 64})


def test_every_milvus_call_is_bounded_by_default_and_the_bound_is_a_flag(monkeypatch):
    import argparse

    parser = argparse.ArgumentParser()
    add_milvus_arguments(parser)
    assert milvus_settings(parser.parse_args([])).call_timeout_s == 600.0
    assert milvus_settings(parser.parse_args(["--milvus-timeout-s", "30"])).call_timeout_s == 30.0
    monkeypatch.setenv("IMAGE_SEARCH_MILVUS_TIMEOUT_S", "45")
    parser = argparse.ArgumentParser()
    add_milvus_arguments(parser)
    assert milvus_settings(parser.parse_args([])).call_timeout_s == 45.0
    for bad in ("0", "-1", "nan"):
        with pytest.raises(ValueError, match="--milvus-timeout-s"):
            milvus_settings(parser.parse_args(["--milvus-timeout-s", bad]))
