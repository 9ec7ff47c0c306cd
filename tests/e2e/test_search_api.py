"""The search API against real Milvus (milvus-lite and the Milvus server), through real V2 clients and V1 JSON:
filters over manifest metadata, more-like-this, embedding queries, min_score and offset, namespaces, metadata updates,
pinned model versions."""

import base64
import csv
import hashlib
import json
import shutil
import uuid

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from harness.predictor_server import run_cli, run_predictor
from predictor.embedding.model_package import default_spec
from tests.e2e.conftest import BACKENDS

MODEL = "image-search"
VERSION = default_spec().version
CATEGORIES = {
    "animals": ["chelsea", "astronaut"],
    "space": ["hubble_deep_field", "moon", "rocket"],
    "texture": ["brick", "grass", "gravel"],
    "medical": ["immunohistochemistry", "retina", "cell", "microaneurysms"],
    "objects": ["camera", "clock", "coffee", "coins", "page", "text"],
    "vehicles": ["motorcycle_left", "motorcycle_right"],
}
CATEGORY_OF = {name: category for category, names in CATEGORIES.items() for name in names}
SHOP = ["chelsea", "coffee", "rocket", "moon"]
HEADER = "x-tenant"


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=BACKENDS)
def api(request, catalogue, tmp_path_factory):
    """One collection with the catalogue in the default namespace (manifest: category, price) and four of its photos in
    namespace `shop` (CSV manifest: custom ids, category "sale"); chelsea's metadata changed afterwards."""
    workdir = tmp_path_factory.mktemp("api")
    uri = str(workdir / "milvus.db") if request.param == "milvus-lite" else request.getfixturevalue("milvus_server_uri")
    alias = f"api_{uuid.uuid4().hex[:8]}"
    manifest = workdir / "catalogue.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"path": path.name, "category": CATEGORY_OF[name], "price": 5 * number}) + "\n"
            for number, (name, path) in enumerate(sorted(catalogue.photos.items()))
        )
        + json.dumps({"path": "not-there.jpg", "category": "ghost"})
        + "\n"
    )
    indexed = ok(
        run_cli(
            "index", str(catalogue.directory), "--metadata", str(manifest), "--milvus-uri", uri, "--collection", alias
        )
    )
    assert "added 20" in indexed and "1 manifest rows matched no file" in indexed
    shop = workdir / "shop"
    shop.mkdir()
    with (workdir / "shop.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "id", "category", "price"])
        for number, name in enumerate(SHOP):
            shutil.copy(catalogue.photos[name], shop / f"{name}.jpg")
            writer.writerow([f"{name}.jpg", f"sku-{number}", "sale", number])
    ok(
        run_cli(
            "index",
            str(shop),
            "--namespace",
            "shop",
            "--metadata",
            str(workdir / "shop.csv"),
            "--milvus-uri",
            uri,
            "--collection",
            alias,
        )
    )
    update = workdir / "update.jsonl"
    update.write_text(json.dumps({"id": sha(catalogue.photos["chelsea"]), "category": "cats", "price": None}) + "\n")
    assert "metadata updated 1" in ok(
        run_cli("metadata", "set", "--metadata", str(update), "--milvus-uri", uri, "--collection", alias)
    )
    with run_predictor(uri, workdir, "--collection", alias, "--namespace-header", HEADER) as server:
        yield server


def query(server, transport: str, name: str, values, headers=None, version: str = "", **parameters):
    """One V2 request through tritonclient; returns its outputs as lists of str/float."""
    outputs = ["ids", "scores", "uris", "metadata"]
    datatype = "FP32" if name == "embedding" else "BYTES"
    array = np.asarray(values, dtype=np.float32) if name == "embedding" else np.array(values, dtype=np.object_)
    if transport == "grpc":
        client = grpcclient.InferenceServerClient(server.grpc_address)
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        requested = [grpcclient.InferRequestedOutput(o) for o in outputs]
    else:
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        requested = [httpclient.InferRequestedOutput(o, binary_data=False) for o in outputs]
    result = client.infer(
        MODEL, [tensor], outputs=requested, parameters=parameters, headers=headers, model_version=version
    )

    def text(value):
        return value.decode() if isinstance(value, bytes) else str(value)

    return {
        "ids": [[text(v) for v in row] for row in result.as_numpy("ids")],
        "scores": result.as_numpy("scores").tolist(),
        "uris": [[text(v) for v in row] for row in result.as_numpy("uris")],
        "metadata": [[json.loads(text(v)) if text(v) else None for v in row] for row in result.as_numpy("metadata")],
    }


def v1(server, instances, headers=None, **parameters) -> httpx.Response:
    return httpx.post(
        f"{server.http_url}/v1/models/{MODEL}:predict",
        json={"instances": instances, "parameters": parameters},
        headers=headers,
        timeout=60,
    )


def photo(catalogue, name: str) -> bytes:
    return catalogue.photos[name].read_bytes()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_filter_by_category_returns_only_that_category(api, catalogue, transport):
    found = query(
        api, transport, "image", [photo(catalogue, "coffee")], top_k=20, filter='metadata["category"] == "texture"'
    )
    assert [m["category"] for m in found["metadata"][0] if m] == ["texture"] * 3
    assert {uri.rsplit("/", 1)[-1] for uri in found["uris"][0] if uri} == {"brick.jpg", "grass.jpg", "gravel.jpg"}
    cheap = query(
        api,
        transport,
        "image",
        [photo(catalogue, "coffee")],
        top_k=20,
        filter='metadata["category"] in ["space", "objects"] and metadata["price"] < 50',
    )
    rows = [m for m in cheap["metadata"][0] if m]
    assert rows and all(m["category"] in ("space", "objects") and m["price"] < 50 for m in rows)


def test_a_filter_over_v1_and_a_refused_one(api, catalogue):
    image = {"image": {"b64": base64.b64encode(photo(catalogue, "moon")).decode()}}
    response = v1(api, [image], top_k=10, filter='metadata["category"] == "space"')
    assert response.status_code == 200, response.text
    assert {hit["metadata"]["category"] for hit in response.json()["predictions"][0]} == {"space"}
    refused = v1(api, [image], filter='namespace == "shop"')
    assert refused.status_code == 400 and "'namespace' is not a metadata field" in refused.json()["error"]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_more_like_this_by_id_leaves_the_item_itself_out(api, catalogue, transport):
    moon = sha(catalogue.photos["moon"])
    found = query(api, transport, "id", [moon], top_k=5)
    assert moon not in found["ids"][0] and len([i for i in found["ids"][0] if i]) == 5
    assert found["scores"][0] == sorted(found["scores"][0], reverse=True)


def test_an_embedding_query_returns_the_same_hits_as_the_image_query_it_came_from(api, catalogue):
    client = httpclient.InferenceServerClient(api.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo(catalogue, "rocket")], dtype=np.object_))
    result = client.infer(MODEL, [tensor], parameters={"top_k": 6, "return_embedding": True})
    embedding = result.as_numpy("embedding")
    from_embedding = query(api, "grpc", "embedding", embedding * 2.5, top_k=6)
    assert from_embedding["ids"][0] == [v.decode() for v in result.as_numpy("ids")[0]]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_min_score_drops_weak_hits_and_offset_pages(api, catalogue, transport):
    image = [photo(catalogue, "brick")]
    ranking = query(api, transport, "image", image, top_k=10)
    page = query(api, transport, "image", image, top_k=3, offset=4)
    assert page["ids"][0] == ranking["ids"][0][4:7]
    threshold = (ranking["scores"][0][1] + ranking["scores"][0][2]) / 2
    strict = query(api, transport, "image", image, top_k=10, min_score=threshold)
    assert strict["ids"][0] == ranking["ids"][0][:2]


def test_namespaces_are_isolated_including_through_the_header(api, catalogue):
    image = [photo(catalogue, "chelsea")]
    shop = query(api, "http", "image", image, top_k=20, namespace="shop")
    assert {i for i in shop["ids"][0] if i} == {f"sku-{n}" for n in range(len(SHOP))}, "the manifest gave these ids"
    assert all(m["category"] == "sale" for m in shop["metadata"][0] if m)
    by_header = query(api, "grpc", "image", image, headers={HEADER: "shop"}, top_k=20)
    assert by_header["ids"] == shop["ids"]
    default = query(api, "grpc", "image", image, top_k=20)
    assert not any(i.startswith("sku-") for i in default["ids"][0])
    assert not any(m and m["category"] == "sale" for m in default["metadata"][0])
    like_this = query(api, "http", "id", [sha(catalogue.photos["coffee"])], top_k=20)
    assert not any(i.startswith("sku-") for i in like_this["ids"][0]), "more-like-this stays in its namespace"
    nobody = query(api, "http", "image", image, namespace="nobody")
    assert nobody["ids"] == [[]], "an unknown namespace is an empty result"
    for client_error in (
        lambda: query(api, "http", "image", image, headers={HEADER: "shop"}, namespace="default"),
        lambda: query(api, "grpc", "image", image, headers={HEADER: "shop"}, namespace="default"),
    ):
        with pytest.raises(InferenceServerException, match=f"disagrees with header {HEADER}"):
            client_error()
    header_v1 = v1(api, [{"id": "sku-2"}], headers={HEADER: "shop"}, top_k=3)
    assert header_v1.status_code == 200, header_v1.text
    assert {hit["id"] for hit in header_v1.json()["predictions"][0]} <= {"sku-0", "sku-1", "sku-3"}


def test_metadata_set_changed_a_row_without_touching_its_vector(api, catalogue):
    chelsea = sha(catalogue.photos["chelsea"])
    found = query(api, "http", "image", [photo(catalogue, "chelsea")], top_k=1)
    assert found["ids"][0] == [chelsea] and found["scores"][0][0] > 0.999, "the vector is the one indexed"
    assert found["metadata"][0][0] == {"filename": "chelsea.jpg", "category": "cats"}, "price was removed"


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_effort_within_the_collections_index_is_searched_and_beyond_it_refused(api, catalogue, transport):
    image = [photo(catalogue, "coins")]
    coins = sha(catalogue.photos["coins"])
    # The default index is IVF_FLAT with 1024 lists, so nprobe goes from 1 to 1024. One list holds the query's own
    # vector (milvus-lite builds the index even for these few rows, and then finds little else); all of them hold all.
    narrow = query(api, transport, "image", image, top_k=3, effort=1)
    assert narrow["ids"][0][0] == coins
    found = query(api, transport, "image", image, top_k=3, effort=1024)
    assert found["ids"][0][0] == coins and len([i for i in found["ids"][0] if i]) == 3
    with pytest.raises(InferenceServerException) as refused:
        query(api, transport, "image", image, top_k=3, effort=1025)
    assert "parameter 'effort' must be an integer from 1 to 1024" in refused.value.message()
    assert "IVF_FLAT index (its nprobe)" in refused.value.message()
    assert refused.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    image_v1 = {"image": {"b64": base64.b64encode(image[0]).decode()}}
    assert v1(api, [image_v1], top_k=3, effort=64).status_code == 200
    wrong_type = v1(api, [image_v1], effort="high")
    assert wrong_type.status_code == 400 and "parameter 'effort' must be an integer" in wrong_type.json()["error"]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_an_unknown_id_is_refused_naming_it(api, transport):
    with pytest.raises(InferenceServerException, match="id 'no-such-image' is not in namespace 'default'"):
        query(api, transport, "id", ["no-such-image"])


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_pinned_model_version_reaches_the_server_and_another_is_not_found(api, catalogue, transport):
    image = [photo(catalogue, "coins")]
    assert query(api, transport, "image", image, version=VERSION, top_k=1)["ids"][0][0] == sha(
        catalogue.photos["coins"]
    )
    with pytest.raises(InferenceServerException) as refused:
        query(api, transport, "image", image, version="2")
    assert "no version '2'" in refused.value.message()
    assert refused.value.status() in ("404", "StatusCode.NOT_FOUND")
    client = httpclient.InferenceServerClient(api.http_url.removeprefix("http://"))
    assert client.get_model_metadata(MODEL, VERSION)["versions"] == [VERSION]
    assert client.is_model_ready(MODEL, VERSION) and not client.is_model_ready(MODEL, "2")
    grpc = grpcclient.InferenceServerClient(api.grpc_address)
    assert list(grpc.get_model_metadata(MODEL, VERSION).versions) == [VERSION]
    assert grpc.get_server_metadata().name == "image-search"


def test_rows_written_while_the_server_runs_are_found_as_soon_as_the_writer_returns(
    milvus_server_uri, catalogue, tmp_path
):
    """The server searches at Bounded consistency, which does not wait for Milvus's time tick, so what it sees right
    after a write rests on the writer: `index`, `metadata set` and `delete` return only once Milvus has applied their
    writes (ImageIndex.settle), and every write here is followed at once by a query, with no waiting. (A Milvus
    server: milvus-lite lets one process at a time open its file, so nothing can write to it while a server runs.)"""
    from predictor.index.collection import ImageIndex, IndexRow
    from predictor.index.milvus import MilvusAccess

    alias = f"fresh_{uuid.uuid4().hex[:8]}"
    first, late = tmp_path / "first", tmp_path / "late"
    first.mkdir()
    late.mkdir()
    for name in ("brick", "grass"):
        shutil.copy(catalogue.photos[name], first / f"{name}.jpg")
    shutil.copy(catalogue.photos["rocket"], late / "rocket.jpg")
    rocket = sha(catalogue.photos["rocket"])

    def cli(*args: str) -> str:
        return ok(run_cli(*args, "--milvus-uri", milvus_server_uri, "--collection", alias))

    cli("index", str(first))
    with run_predictor(milvus_server_uri, tmp_path, "--collection", alias) as server:
        image = [photo(catalogue, "rocket")]
        assert rocket not in query(server, "grpc", "image", image, top_k=3)["ids"][0]
        cli("index", str(late))
        found = query(server, "grpc", "image", image, top_k=3)
        assert found["ids"][0][0] == rocket and found["scores"][0][0] > 0.999
        manifest = tmp_path / "update.jsonl"
        manifest.write_text(json.dumps({"id": rocket, "category": "space"}) + "\n")
        cli("metadata", "set", "--metadata", str(manifest))
        assert query(server, "http", "image", image, top_k=1)["metadata"][0][0]["category"] == "space"
        cli("delete", "--id", rocket)
        assert rocket not in query(server, "grpc", "id", [sha(catalogue.photos["brick"])], top_k=3)["ids"][0]

        # A writer that does not exit after writing (the CLI's exit alone takes longer than Milvus's time tick).
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array(image, dtype=np.object_))
        vector = client.infer(MODEL, [tensor], parameters={"return_embedding": True}).as_numpy("embedding")
        writer = ImageIndex.for_model(MilvusAccess(milvus_server_uri), alias, default_spec().identity)
        try:
            for number in range(3):
                row_id = f"written-{number}"
                writer.upsert("late", [IndexRow(row_id, vector[0], f"memory://{row_id}", {})])
                writer.settle()
                assert query(server, "grpc", "embedding", vector, top_k=1, namespace="late")["ids"] == [[row_id]]
                writer.delete("late", [row_id])
                writer.settle()
        finally:
            writer.close()
