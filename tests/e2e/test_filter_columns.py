"""Filter columns on real Milvus (milvus-lite and the Milvus server): a collection that keeps metadata keys in typed
columns returns exactly the rows the same filter returns from the JSON, for every comparison, `not`, missing and
null keys included; a value of another type is refused before anything is written; and `image-search reindex
--filter-columns` gives an existing collection its columns from the rows it stores, which the server then filters
through, or refuses in one line, leaving the collection as it was, when a row does not fit."""

import base64
import contextlib
import json
import uuid

import httpx
import numpy as np
import pytest

from harness.predictor_server import run_cli, run_predictor
from predictor.errors import InvalidRequest
from predictor.identity import ModelIdentity
from predictor.index.collection import ImageIndex, IndexRow
from predictor.index.column_migration import add_filter_columns
from predictor.index.filter_columns import parse_filter_columns
from predictor.index.filters import validate_filter
from predictor.index.milvus import MilvusAccess
from predictor.index.search_options import SearchOptions
from predictor.index.vector_index import VectorIndex
from tests.e2e.conftest import release_lite

DIMENSION = 8
COLUMNS = parse_filter_columns("shop:string,year:int")
SHOPS = ["a", "b", "", "Zoë", 'say "hi"', None, "missing"]
YEARS = [1999, 2005, 2010.0, -3, None, "missing"]

# Each is checked against the JSON; `rewritten` says whether the columns answer it (some must keep reading the JSON).
FILTERS = [
    ('metadata["shop"] == "a"', True),
    ('metadata["shop"] != "a"', True),
    ('not (metadata["shop"] == "a")', True),
    ('not (not (metadata["shop"] != "b"))', True),
    ('metadata["shop"] in ["a", "", "Zoë"]', True),
    ('metadata["shop"] not in ["a", "b"]', True),
    ('metadata["shop"] < "b"', True),
    ('metadata["shop"] >= "a"', True),
    ('metadata["shop"] == "say \\"hi\\""', True),
    ('metadata["year"] == 2010', True),
    ('metadata["year"] != 2005', True),
    ('2000 <= metadata["year"] < 2011', True),
    ('not (metadata["year"] > 0 and metadata["shop"] == "a")', True),
    ('not (metadata["year"] > 0) or not (metadata["shop"] like "a%")', True),
    ('metadata["year"] < 2005.5', False),
    ('metadata["shop"] == 5', False),
    ('exists metadata["shop"]', False),
    ('metadata["shop"] like "a%"', False),
]


def catalogue_rows() -> list[IndexRow]:
    rng = np.random.default_rng(0)
    rows = []
    for number, (shop, year) in enumerate((shop, year) for shop in SHOPS for year in YEARS):
        metadata = {"n": number}
        if shop != "missing":
            metadata["shop"] = shop
        if year != "missing":
            metadata["year"] = year
        vector = rng.standard_normal(DIMENSION).astype(np.float32)
        rows.append(IndexRow(str(number), vector / np.linalg.norm(vector), f"synthetic/{number}", metadata))
    return rows


def collection(uri: str, columns=()) -> ImageIndex:
    index = ImageIndex.for_model(
        MilvusAccess(uri),
        f"columns_{uuid.uuid4().hex[:8]}",
        ModelIdentity("synthetic", "1", DIMENSION),
        filter_columns=columns,
    )
    index.ensure_collection()
    index.upsert("default", catalogue_rows())
    return index


@pytest.fixture(scope="module")
def pair(module_milvus):
    """The same rows in a collection with filter columns and in one without."""
    with_columns, plain = collection(module_milvus, COLUMNS), collection(module_milvus, ())
    yield with_columns, plain
    for index in (with_columns, plain):
        index.access.call("drop_collection", "drop_collection", index.collection)
        index.close()


def matching(index: ImageIndex, expression: str) -> set[str]:
    return {str(row["id"]) for batch in index.scan("default", expression, ["id"], 1000) for row in batch}


@pytest.mark.parametrize(("text", "rewritten"), FILTERS)
def test_a_filter_keeps_the_rows_the_json_keeps(pair, text, rewritten):
    with_columns, plain = pair
    expression = validate_filter(text)
    assert ("filter_" in with_columns.layout.scope("default", expression)) == rewritten
    assert "filter_" not in plain.layout.scope("default", expression)
    expected = matching(plain, expression)
    assert matching(with_columns, expression) == expected


def test_the_filters_are_not_all_empty_or_all_rows(pair):
    """The comparison above means something only if the filters tell rows apart."""
    _, plain = pair
    sizes = {text: len(matching(plain, validate_filter(text))) for text, rewritten in FILTERS if rewritten}
    assert all(0 < size < len(catalogue_rows()) for size in sizes.values()), sizes
    assert len(set(sizes.values())) > 5, sizes


def test_a_search_through_the_columns_finds_what_the_json_finds(pair):
    with_columns, plain = pair
    query = catalogue_rows()[3].vector[np.newaxis]
    expression = validate_filter('metadata["shop"] != "b" and metadata["year"] >= 2005')
    options = SearchOptions(top_k=10, filter=expression)
    hits = [[hit.id for hit in index.search(query, options)[0][:10]] for index in (with_columns, plain)]
    assert hits[0] == hits[1]
    expected = matching(plain, expression)
    assert set(hits[0]) <= expected and len(hits[0]) == min(10, len(expected))


def test_a_value_of_another_type_is_refused_and_nothing_is_written(pair):
    with_columns, _ = pair
    before = with_columns.count("default")
    row = catalogue_rows()[0]
    for metadata in ({"shop": 5}, {"year": "2005"}, {"year": 2005.5}, {"year": True}):
        with pytest.raises(InvalidRequest, match="filter column"):
            with_columns.upsert("default", [IndexRow("wrong", row.vector, "synthetic/wrong", metadata)])
    assert with_columns.count("default") == before


def test_a_metadata_update_moves_the_columns_with_it(pair):
    with_columns, _ = pair
    dated = validate_filter('metadata["year"] >= 0')
    assert "0" in matching(with_columns, dated)
    changed, missing = with_columns.update_metadata("default", {"0": {"shop": "moved", "year": None}})
    assert (changed, missing) == (1, [])
    assert matching(with_columns, validate_filter('metadata["shop"] == "moved"')) == {"0"}
    assert "0" not in matching(with_columns, dated)
    with_columns.update_metadata("default", {"0": dict(catalogue_rows()[0].metadata)})


def test_a_reopened_collection_reads_its_own_columns(pair, module_milvus):
    with_columns, _ = pair
    reopened = ImageIndex(MilvusAccess(module_milvus), with_columns.collection, with_columns.identity)
    assert reopened.layout.filter_columns == COLUMNS
    reopened.close()


class Interrupted(Exception):
    pass


def test_a_migration_stopped_while_copying_back_is_finished_by_running_it_again(module_milvus):
    plain = collection(module_milvus, ())
    expression = validate_filter('metadata["year"] >= 2005 and metadata["shop"] != "b"')
    expected = matching(plain, expression)
    calls = []

    def stop_in_the_second_copy(copied: int) -> None:
        calls.append(copied)
        if len(calls) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        add_filter_columns(plain, COLUMNS, VectorIndex(), progress=stop_in_the_second_copy)
    # The collection was dropped and is half made again; the complete copy is what the second run starts from.
    migrated = add_filter_columns(plain, COLUMNS, VectorIndex())
    assert migrated.rows == len(catalogue_rows())
    reopened = ImageIndex(MilvusAccess(module_milvus), plain.collection, plain.identity)
    assert reopened.layout.filter_columns == COLUMNS and reopened.count() == len(catalogue_rows())
    assert "filter_" in reopened.layout.scope("default", expression)
    assert matching(reopened, expression) == expected
    assert not reopened.access.has_collection(plain.collection + "__copy")
    reopened.access.call("drop_collection", "drop_collection", plain.collection)
    reopened.close()
    plain.close()


@contextlib.contextmanager
def opened(uri: str):
    """This process's own connection, let go before a command opens the same milvus-lite file."""
    access = MilvusAccess(uri)
    try:
        yield access
    finally:
        access.close()
        if uri.endswith(".db"):
            release_lite(uri)


def photos_with_manifest(workdir, catalogue, shops: list) -> tuple[list[str], object]:
    names = sorted(catalogue.photos)[: len(shops)]
    photos = workdir / "photos"
    photos.mkdir()
    for name in names:
        (photos / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
    manifest = workdir / "shops.jsonl"
    manifest.write_text(
        "".join(json.dumps({"path": f"{n}.jpg", "shop": s}) + "\n" for n, s in zip(names, shops, strict=True))
    )
    return names, photos, manifest


def stored_signatures(access, collection: str) -> dict[str, str]:
    rows = access.call(
        "query", "query", collection, filter='key != ""', output_fields=["id", "signature"], collection=collection
    )
    return {str(row["id"]): str(row["signature"]) for row in rows}


@pytest.fixture(scope="module")
def served(catalogue, tmp_path_factory, module_milvus):
    """The sample photos indexed by the CLI, given a shop column afterwards by `reindex`, and a predictor serving
    them."""
    workdir = tmp_path_factory.mktemp("filter-columns-served")
    uri = str(workdir / "milvus.db") if module_milvus.endswith(".db") else module_milvus
    alias = f"shops_{uuid.uuid4().hex[:8]}"
    shops = ["north", "south"] * 3
    names, photos, manifest = photos_with_manifest(workdir, catalogue, shops)
    common = ["--milvus-uri", uri, "--collection", alias]
    indexed = run_cli("index", str(photos), *common, "--metadata", str(manifest))
    assert indexed.returncode == 0 and f"added {len(names)}" in indexed.stdout, indexed.stderr
    with opened(uri) as access:
        collection = access.alias_target(alias)
        access.set_properties(collection, {"image_search.replaced": "an_older_collection"})
        assert "filter_shop" not in str(access.describe(collection)["fields"])
        signatures = stored_signatures(access, collection)
        assert len(signatures) == len(names) and all(signatures.values()), "indexing stores each copy signature"
    rebuilt = run_cli("reindex", *common, "--filter-columns", "shop:string")
    assert rebuilt.returncode == 0 and f"({len(names)} rows) with filter columns shop:string" in rebuilt.stdout, (
        rebuilt.stderr
    )
    # The same collection, reached through the same alias, with its properties and a column now.
    with opened(uri) as access:
        assert access.alias_target(alias) == collection and access.count(collection) == len(names)
        assert access.properties(collection)["image_search.replaced"] == "an_older_collection"
        assert "filter_shop" in str(access.describe(collection)["fields"])
        assert not access.has_collection(collection + "__copy")
        assert stored_signatures(access, collection) == signatures, "reindex keeps the copy signatures"
    with run_predictor(uri, workdir, "--collection", alias) as server:
        yield (
            server,
            catalogue.photos[names[0]].read_bytes(),
            {n for n, s in zip(names, shops, strict=True) if s == "north"},
        )


def test_the_server_filters_through_the_columns_reindex_added(served):
    server, image, north = served
    body = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}],
        "parameters": {"top_k": 6, "filter": 'metadata["shop"] == "north"'},
    }
    response = httpx.post(f"{server.http_url}/v2/models/image-search/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output["data"] for output in response.json()["outputs"]}
    uris = [uri for uri in outputs["uris"] if uri]
    assert {uri.rsplit("/", 1)[-1].removesuffix(".jpg") for uri in uris} == north


def test_a_row_the_columns_do_not_fit_is_refused_and_reindex_leaves_the_collection_as_it_was(
    catalogue, tmp_path, module_milvus
):
    uri = str(tmp_path / "milvus.db") if module_milvus.endswith(".db") else module_milvus
    alias = f"misfit_{uuid.uuid4().hex[:8]}"
    names, photos, manifest = photos_with_manifest(tmp_path, catalogue, ["north", 7, "south"])
    common = ["--milvus-uri", uri, "--collection", alias]
    with_columns = ["--milvus-uri", uri, "--collection", f"{alias}_new", "--filter-columns", "shop:string"]
    refused = run_cli("index", str(photos), *with_columns, "--metadata", str(manifest))
    assert refused.returncode != 0
    (line,) = [line for line in refused.stderr.splitlines() if "error" in line]
    assert "metadata['shop'] is 7" in line and "image '" in line
    assert run_cli("index", str(photos), *common, "--metadata", str(manifest)).returncode == 0
    refused = run_cli("reindex", *common, "--filter-columns", "shop:string")
    assert refused.returncode != 0
    (line,) = [line for line in refused.stderr.splitlines() if "error" in line]
    assert "metadata['shop'] is 7" in line and "image '" in line
    with opened(uri) as access:
        collection = access.alias_target(alias)
        assert access.count(collection) == len(names)
        assert "filter_shop" not in str(access.describe(collection)["fields"])
        assert not access.has_collection(collection + "__copy")
