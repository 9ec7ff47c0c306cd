"""Text-to-image search with a CLIP package made from a tiny open_clip model with random weights, over V2 REST (binary
and JSON), gRPC and V1: the served embeddings and rankings equal open_clip's own.

A text query reaches Milvus through the same search as an image query: the ranking over gRPC runs on both Milvus kinds,
the rest on the embedded one."""

import base64
import hashlib
import io
import uuid

import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from harness.browser import chromium, chromium_missing
from harness.clip_models import make_package, open_clip_model
from harness.predictor_server import run_cli, run_predictor
from tests.e2e.conftest import BACKENDS

MODEL = "image-search"
TEXTS = ["a photo of a cat", "a red bicycle", "the moon at night"]
TOP_K = 5
# The indexed pictures are at the model's input size (64 px), where neither pipeline resizes: the pixels the server
# embeds are open_clip's, so scores agree to float rounding. (Photos at full size go through two different resizes,
# and with random weights the text-image scores of a catalogue lie within a few thousandths of each other: a resize
# can swap neighbours there. The image-embedding tests below check full-size photos against open_clip's resize.)
TIE = 5e-4


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def clip_package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def small_catalogue(catalogue, tmp_path_factory):
    """The sample catalogue's photos as 64 px PNGs: the tiny model's input size."""
    directory = tmp_path_factory.mktemp("small-catalogue")
    photos = {}
    for name, path in catalogue.photos.items():
        image = Image.open(path).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image.crop((left, top, left + side, top + side)).resize((64, 64), Image.Resampling.BICUBIC).save(
            directory / f"{name}.png"
        )
        photos[name] = directory / f"{name}.png"
    return photos


@pytest.fixture(scope="module")
def reference(clip_package, small_catalogue):
    """open_clip's own embeddings: the catalogue through its preprocessing, texts through its tokenizer."""
    model, preprocess, tokenizer = open_clip_model(clip_package)
    names = sorted(small_catalogue)
    with torch.no_grad():
        images = model.encode_image(
            torch.stack([preprocess(Image.open(small_catalogue[name])) for name in names]), normalize=True
        ).numpy()
    ids = [hashlib.sha256(small_catalogue[name].read_bytes()).hexdigest() for name in names]

    def encode_text(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return model.encode_text(tokenizer(texts), normalize=True).numpy()

    def encode_image(data: bytes) -> np.ndarray:
        with torch.no_grad():
            return model.encode_image(preprocess(Image.open(io.BytesIO(data))).unsqueeze(0), normalize=True).numpy()[0]

    return {"ids": ids, "images": images, "encode_text": encode_text, "encode_image": encode_image}


def serve_clip(uri: str, clip_package, small_catalogue, workdir):
    collection = f"clip_{uuid.uuid4().hex[:8]}"
    # fp32 as open_clip's reference: where the CPU runs bf16 natively, `auto` would take it, and its scores differ
    # from fp32's by a few thousandths, more than the ties these rankings are checked to.
    model = ["--model-dir", str(clip_package), "--precision", "fp32"]
    where = ["--milvus-uri", uri, "--collection", collection, *model]
    indexed = ok(run_cli("index", str(next(iter(small_catalogue.values())).parent), *where))
    assert "added 20" in indexed
    return run_predictor(uri, workdir, "--collection", collection, *model, "--ui")


@pytest.fixture(scope="module")
def clip_server(clip_package, small_catalogue, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("clip-server")
    with serve_clip(str(workdir / "milvus.db"), clip_package, small_catalogue, workdir) as running:
        yield running


@pytest.fixture(scope="module", params=BACKENDS)
def clip_server_each(request, clip_package, small_catalogue, tmp_path_factory):
    if request.param == "milvus-lite":
        yield request.getfixturevalue("clip_server")
        return
    uri = request.getfixturevalue("milvus_server_uri")
    with serve_clip(uri, clip_package, small_catalogue, tmp_path_factory.mktemp("clip-server")) as running:
        yield running


def exact_top_k(reference, text: str) -> tuple[list[str], np.ndarray]:
    scores = reference["images"] @ reference["encode_text"]([text])[0]
    order = np.argsort(-scores)[:TOP_K]
    return [reference["ids"][i] for i in order], scores


def assert_ranking_is_exact_search(reference, text: str, ids: list[str], scores: list[float]) -> None:
    expected_ids, exact = exact_top_k(reference, text)
    by_id = dict(zip(reference["ids"], exact, strict=True))
    assert len(ids) == TOP_K
    # The server's scores are open_clip's cosine similarities ...
    np.testing.assert_allclose(scores, [by_id[i] for i in ids], atol=TIE)
    # ... and its ranking is exact search's, rank by rank (a swap only where two scores tie).
    for got, expected in zip(ids, expected_ids, strict=True):
        assert got == expected or abs(by_id[got] - by_id[expected]) < TIE, (ids, expected_ids)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_served_text_embeddings_equal_open_clips_encode_text(clip_server, reference):
    client = httpclient.InferenceServerClient(clip_server.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_), binary_data=True)
    result = client.infer(MODEL, [tensor], parameters={"top_k": 1, "return_embedding": True})
    served = result.as_numpy("embedding")
    cosines = np.sum(served * reference["encode_text"](TEXTS), axis=1)
    assert cosines.min() >= 0.999, cosines


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_served_image_embeddings_equal_open_clips_encode_image(clip_server, reference, catalogue, image_format):
    names = ["chelsea", "rocket", "coffee", "camera"]
    files = []
    for name in names:
        out = io.BytesIO()
        Image.open(catalogue.photos[name]).convert("RGB").save(out, format=image_format)
        files.append(out.getvalue())
    client = grpcclient.InferenceServerClient(clip_server.grpc_address)
    tensor = grpcclient.InferInput("image", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    result = client.infer(MODEL, [tensor], parameters={"top_k": 1, "return_embedding": True})
    served = result.as_numpy("embedding")
    cosines = [float(served[row] @ reference["encode_image"](data)) for row, data in enumerate(files)]
    assert min(cosines) >= 0.99, cosines


def test_text_queries_over_v2_rest_binary_rank_as_exact_search_of_open_clip_embeddings(clip_server, reference):
    client = httpclient.InferenceServerClient(clip_server.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_), binary_data=True)
    result = client.infer(MODEL, [tensor], parameters={"top_k": TOP_K})
    for row, text in enumerate(TEXTS):
        ids = [_text(v) for v in result.as_numpy("ids")[row]]
        assert_ranking_is_exact_search(reference, text, ids, list(result.as_numpy("scores")[row]))


def test_text_queries_over_v2_rest_json_rank_as_exact_search(clip_server, reference):
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}],
        "parameters": {"top_k": TOP_K},
    }
    answer = httpx.post(f"{clip_server.http_url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = {output["name"]: output for output in answer.json()["outputs"]}
    ids = np.array(outputs["ids"]["data"]).reshape(outputs["ids"]["shape"])
    scores = np.array(outputs["scores"]["data"]).reshape(outputs["scores"]["shape"])
    for row, text in enumerate(TEXTS):
        assert_ranking_is_exact_search(reference, text, list(ids[row]), list(scores[row]))


def test_text_queries_over_grpc_rank_as_exact_search(clip_server_each, reference):
    client = grpcclient.InferenceServerClient(clip_server_each.grpc_address)
    tensor = grpcclient.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
    result = client.infer(MODEL, [tensor], parameters={"top_k": TOP_K})
    for row, text in enumerate(TEXTS):
        ids = [_text(v) for v in result.as_numpy("ids")[row]]
        assert_ranking_is_exact_search(reference, text, ids, list(result.as_numpy("scores")[row]))


def test_text_queries_over_v1_rank_as_exact_search(clip_server, reference):
    body = {"instances": [{"text": text} for text in TEXTS], "parameters": {"top_k": TOP_K}}
    answer = httpx.post(f"{clip_server.http_url}/v1/models/{MODEL}:predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    for row, text in enumerate(TEXTS):
        hits = answer.json()["predictions"][row]
        assert_ranking_is_exact_search(reference, text, [h["id"] for h in hits], [h["score"] for h in hits])


def test_text_queries_take_the_search_options(clip_server_each, reference):
    client = grpcclient.InferenceServerClient(clip_server_each.grpc_address)
    tensor = grpcclient.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([TEXTS[0].encode()], dtype=np.object_))
    first = client.infer(MODEL, [tensor], parameters={"top_k": 4})
    second_page = client.infer(MODEL, [tensor], parameters={"top_k": 2, "offset": 2})
    assert list(second_page.as_numpy("ids")[0]) == list(first.as_numpy("ids")[0][2:4])
    floor = float(first.as_numpy("scores")[0][1])
    above = client.infer(MODEL, [tensor], parameters={"top_k": 10, "min_score": floor - 1e-6})
    assert [s for s in above.as_numpy("scores")[0] if s] and min(
        s for s in above.as_numpy("scores")[0] if s
    ) >= floor - 1e-5
    other = client.infer(MODEL, [tensor], parameters={"top_k": 3, "namespace": "nobody-here"})
    assert not any(_text(v) for v in other.as_numpy("ids").reshape(-1))


def test_image_and_id_queries_work_on_a_clip_package(clip_server_each, small_catalogue):
    client = httpclient.InferenceServerClient(clip_server_each.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("image", [1], "BYTES")
    rocket_file = small_catalogue["rocket"].read_bytes()
    tensor.set_data_from_numpy(np.array([rocket_file], dtype=np.object_), binary_data=True)
    result = client.infer(MODEL, [tensor], parameters={"top_k": 3})
    rocket = hashlib.sha256(rocket_file).hexdigest()
    assert _text(result.as_numpy("ids")[0][0]) == rocket
    tensor = httpclient.InferInput("id", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([rocket.encode()], dtype=np.object_), binary_data=True)
    more = [_text(v) for v in client.infer(MODEL, [tensor], parameters={"top_k": 3}).as_numpy("ids")[0]]
    assert rocket not in more and len(more) == 3


def test_the_metadata_lists_text_as_an_input(clip_server):
    metadata = httpx.get(f"{clip_server.http_url}/v2/models/{MODEL}").json()
    assert {"name": "text", "datatype": "BYTES", "shape": [-1]} in metadata["inputs"]
    assert {"name": "embedding", "datatype": "FP32", "shape": [-1, 64]} in metadata["inputs"]
    assert metadata["parameters"]["inputs"] == "send exactly one of image, text, embedding, id"


@pytest.mark.parametrize(
    ("texts", "problem"),
    [([""], "text 0 is empty"), (["ok", "   "], "text 1 is empty"), (["x" * 5000], "over the limit of 4096")],
)
def test_bad_text_is_a_400_naming_the_problem_on_every_transport(clip_server, texts, problem):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    answer = httpx.post(f"{clip_server.http_url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert answer.status_code == 400 and problem in answer.json()["error"]
    v1 = {"instances": [{"text": text} for text in texts]}
    answer = httpx.post(f"{clip_server.http_url}/v1/models/{MODEL}:predict", json=v1, timeout=30)
    assert answer.status_code == 400 and problem in answer.json()["error"]
    client = grpcclient.InferenceServerClient(clip_server.grpc_address)
    tensor = grpcclient.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [tensor])
    assert "INVALID_ARGUMENT" in str(refused.value.status()) and problem in refused.value.message()


def test_text_that_is_not_utf8_or_not_a_string_is_a_400(clip_server):
    client = httpclient.InferenceServerClient(clip_server.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"\xff\xfe not text"], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [tensor])
    assert "400" in str(refused.value.status()) and "text 0 is not UTF-8" in refused.value.message()
    answer = httpx.post(
        f"{clip_server.http_url}/v1/models/{MODEL}:predict", json={"instances": [{"text": 42}]}, timeout=30
    )
    assert answer.status_code == 400 and "text 0 must be a string" in answer.json()["error"]
    body = {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    answer = httpx.post(f"{clip_server.http_url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert answer.status_code == 400 and "'text' must have datatype BYTES" in answer.json()["error"]


def test_text_longer_than_the_context_is_cut_off_as_open_clip_does(clip_server, reference):
    long_text = "a photo of a cat " + "sitting on a mat " * 40
    client = httpclient.InferenceServerClient(clip_server.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([long_text.encode()], dtype=np.object_), binary_data=True)
    served = client.infer(MODEL, [tensor], parameters={"top_k": 1, "return_embedding": True}).as_numpy("embedding")
    assert float(served[0] @ reference["encode_text"]([long_text])[0]) >= 0.999


def test_the_classifier_says_what_it_supports_on_a_clip_package(clip_server, catalogue):
    image = base64.b64encode(catalogue.photos["rocket"].read_bytes()).decode()
    answer = httpx.post(
        f"{clip_server.http_url}/v1/models/image-classifier:predict",
        json={"instances": [{"image_base64": image}]},
        timeout=30,
    )
    assert answer.status_code == 400
    assert "classifier head" in answer.json()["error"] and "open_clip package" in answer.json()["error"]


def test_the_cli_queries_by_text(clip_server, reference):
    for transport, url in (("http", clip_server.http_url), ("grpc", clip_server.grpc_address)):
        printed = ok(run_cli("query", "--text", TEXTS[1], "--url", url, "--transport", transport, "--top-k", "3"))
        expected_ids, _ = exact_top_k(reference, TEXTS[1])
        assert TEXTS[1] in printed and expected_ids[0][:12] in printed


def test_the_search_page_shows_a_text_box_that_searches_by_words(clip_server, reference, request, tmp_path):
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    from selenium.webdriver.common.by import By

    from tests.e2e.test_search_page import hits, open_page, searched, set_field

    with chromium(tmp_path / "chromium-profile") as browser:
        browser.set_page_load_timeout(60)
        open_page(browser, clip_server)
        assert browser.find_element(By.ID, "text-form").is_displayed()
        set_field(browser, "text-query", TEXTS[1])
        searched(browser, lambda d: d.find_element(By.ID, "text-search").click(), "the search by words")
        results = browser.find_element(By.ID, "results")
        assert (results.get_attribute("data-query"), results.get_attribute("data-state")) == (
            f"text:{TEXTS[1]}",
            "done",
        )
        expected_ids, _ = exact_top_k(reference, TEXTS[1])
        assert hits(browser)[0].get_attribute("data-id") == expected_ids[0]
        assert browser.find_element(By.ID, "query-caption").text == f"Your words: {TEXTS[1]}"
