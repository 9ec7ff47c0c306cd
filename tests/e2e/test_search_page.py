"""The search page (`image-search serve --ui`) on a real server and a real milvus-lite index of the sample catalogue.

Its thumbnails are checked over plain HTTP: only images in the index, named by id, within the caller's namespace; files
the server cannot or may not show are 404. Then a real Chromium uploads a photo, finds the photo itself first with
score 1.00, runs more-like-this from a result, and shows the API's errors in words. One server serves the module.

The browser tests save screenshots under $TEST_ARTIFACTS_DIR when it is set (CI uploads that folder), else under the
test's temporary directory.
"""

import base64
import hashlib
import io
import json
import os
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from harness import raw_http
from harness.browser import chromium, chromium_missing
from harness.predictor_server import run_cli, run_predictor
from predictor.embedding.model_package import default_spec
from predictor.imaging.sample_catalogue import STEREO_PAIR
from predictor.index.collection import ImageIndex, IndexRow
from predictor.index.duplicates import DEFAULT_THRESHOLD
from predictor.index.milvus import MilvusAccess

VERSION = default_spec().version
THUMBNAIL_SIZE = 128
HEADER = "X-Tenant"
CATEGORIES = {"chelsea": "animals", "astronaut": "people", "coffee": "objects", "rocket": "space", "moon": "space"}
MAPPED_PREFIX, MAPPED_URL = "s3://bucket/mapped/", "https://images.example.com/catalogue/"
# An id that closes a quoted key and adds a condition every row of namespace "shop" meets.
CRAFTED_ID = "x'] or namespace == 'shop' or key in ['"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_shop_rows(uri: str, alias: str, chelsea: Path, workdir: Path) -> dict[str, str]:
    """Rows in namespace `shop` that all carry chelsea's vector, one per way a stored uri can be shown or not."""
    not_an_image = workdir / "notes.jpg"
    not_an_image.write_text("these are notes, not a photo\n")
    fifo = workdir / "pipe.jpg"
    os.mkfifo(fifo)
    uris = {
        "shop-chelsea": str(chelsea),
        "file-uri": chelsea.resolve().as_uri(),
        "mapped": MAPPED_PREFIX + "chelsea.jpg",
        "s3-unmapped": "s3://bucket/catalogue/chelsea.jpg",
        "https-unmapped": "https://example.com/photos/chelsea.jpg",
        "not-an-image": str(not_an_image),
        "gone": str(workdir / "gone.jpg"),
        "fifo": str(fifo),
    }
    index = ImageIndex.for_model(MilvusAccess(uri), alias, default_spec().identity)
    try:
        index.load()
        vector = index.vectors_of("default", [sha(chelsea)])[sha(chelsea)]
        index.upsert(
            "shop", [IndexRow(image_id, vector, stored, {"row": image_id}) for image_id, stored in uris.items()]
        )
    finally:
        index.close()
        from milvus_lite.server_manager import server_manager_instance

        # milvus-lite holds the file's lock in this process until its server is released.
        server_manager_instance.release_server(uri)
    return uris


@pytest.fixture(scope="module")
def page(catalogue, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("search-page")
    uri, alias = str(workdir / "milvus.db"), f"page_{uuid.uuid4().hex[:8]}"
    manifest = workdir / "catalogue.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"path": f"{name}.jpg", "category": category}) + "\n" for name, category in CATEGORIES.items()
        )
    )
    indexed = run_cli(
        "index", str(catalogue.directory), "--metadata", str(manifest), "--milvus-uri", uri, "--collection", alias
    )
    assert indexed.returncode == 0, indexed.stderr
    shop = write_shop_rows(uri, alias, catalogue.photos["chelsea"], workdir)
    with run_predictor(
        uri,
        workdir,
        "--collection",
        alias,
        "--ui",
        "--namespace-header",
        HEADER,
        "--thumbnail-size",
        str(THUMBNAIL_SIZE),
        "--thumbnail-base-url",
        f"{MAPPED_PREFIX}={MAPPED_URL}",
        env={
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        },
    ) as server:
        yield server, shop, workdir


@pytest.fixture(scope="module")
def http(page):
    server, _, _ = page
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        yield client


def thumbnail(http, image_id: str, namespace: str | None = None, **headers: str) -> httpx.Response:
    params = {"id": image_id} | ({"namespace": namespace} if namespace else {})
    return http.get("/ui/thumbnail", params=params, headers=headers)


def assert_no_thumbnail(response: httpx.Response, words: str) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["error"]


# Over HTTP ------------------------------------------------------------------------------------------------------------


def test_the_page_and_its_files_are_served_from_the_package_with_a_strict_policy(http):
    redirect = http.get("/ui")
    assert redirect.status_code == 307 and redirect.headers["location"] == "ui/"
    page = http.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "https://images.example.com" in policy, "images a base URL sends elsewhere are allowed, and only those"
    assert 'src="static/app.js"' in page.text and "://" not in page.text.split("<body>")[0], "nothing from a CDN"
    script = http.get("/ui/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "/infer" in script.text
    again = http.get("/ui/static/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304
    assert http.get("/ui/static/server.py").status_code == 404


def test_the_info_names_the_collection_and_counts_its_images_per_namespace(http, page):
    _, shop, _ = page
    info = http.get("/ui/info").json()
    assert info["model"] == "image-search" and info["version"] == VERSION
    assert info["embedding_model"] == {"name": "efficientnet-lite0", "version": VERSION, "dimension": 1280}
    assert info["collection"].startswith("page_") and info["namespace_header"] == HEADER
    assert (info["images"], info["namespace"], info["namespace_images"]) == (20 + len(shop), "default", 20)
    tenant = http.get("/ui/info", headers={HEADER: "shop"})
    assert (tenant.json()["namespace"], tenant.json()["namespace_images"]) == ("shop", len(shop))
    assert tenant.headers["vary"] == HEADER


def test_a_thumbnail_is_a_small_jpeg_of_the_indexed_photo(http, catalogue):
    chelsea = catalogue.photos["chelsea"]
    response = thumbnail(http, sha(chelsea))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "private, max-age=3600"
    image = Image.open(io.BytesIO(response.content))
    original = Image.open(chelsea).convert("RGB")
    assert image.format == "JPEG" and max(image.size) == THUMBNAIL_SIZE
    assert abs(image.width / image.height - original.width / original.height) < 0.02, "the aspect ratio is kept"
    expected = np.asarray(original.resize(image.size, Image.Resampling.LANCZOS), dtype=np.float32)
    assert np.abs(np.asarray(image, dtype=np.float32) - expected).mean() < 6, "it is chelsea, shrunk"
    assert len(response.content) < len(chelsea.read_bytes()) / 4
    unchanged = thumbnail(http, sha(chelsea), **{"If-None-Match": response.headers["etag"]})
    assert unchanged.status_code == 304 and not unchanged.content


def test_thumbnails_name_images_by_id_never_by_path(http, page, catalogue):
    server, _, _ = page
    for image_id in [
        "../../../../etc/passwd",
        "/etc/passwd",
        str(catalogue.photos["chelsea"]),
        catalogue.photos["chelsea"].resolve().as_uri(),
        "..%2F..%2Fetc%2Fpasswd",
        "",
        "x" * 600,
    ]:
        assert_no_thumbnail(thumbnail(http, image_id), "holds no image with this id")
    for path in ["/ui/static/../../pyproject.toml", "/ui/static/%2e%2e%2f%2e%2e%2fpyproject.toml", "/ui/../README.md"]:
        answer = raw_http.get(server.http_url, path)
        assert answer.status == 404, (path, answer.body[:200])
        assert b"[project]" not in answer.body and b"image-search" not in answer.body


def test_ids_of_another_namespace_or_unknown_ones_are_404(http, catalogue):
    chelsea = sha(catalogue.photos["chelsea"])
    assert_no_thumbnail(thumbnail(http, "shop-chelsea"), "namespace 'default' holds no image with this id")
    assert thumbnail(http, "shop-chelsea", "shop").status_code == 200
    assert_no_thumbnail(thumbnail(http, chelsea, "shop"), "namespace 'shop' holds no image with this id")
    assert_no_thumbnail(thumbnail(http, "no-such-id"), "holds no image with this id")
    assert_no_thumbnail(thumbnail(http, CRAFTED_ID), "holds no image with this id")
    assert_no_thumbnail(thumbnail(http, chelsea, "no-such-namespace"), "holds no image with this id")
    assert thumbnail(http, chelsea, "not a namespace!").status_code == 400


def copies(http, image_id: str, namespace: str | None = None, **params: str) -> httpx.Response:
    chosen = {"namespace": namespace} if namespace else {}
    return http.get("/ui/duplicates", params={"id": image_id} | chosen | params)


def test_the_duplicates_of_an_image_are_its_copies_by_signature_not_its_look_alikes(http, page, catalogue):
    server, _, _ = page
    left, right = (catalogue.photos[name] for name in STEREO_PAIR)
    by_embedding = rest_search_ids(server, left, min_score=DEFAULT_THRESHOLD)
    assert sha(right) in by_embedding, "the embedding scores the stereo pair's other half above the threshold"
    found = copies(http, sha(left))
    assert found.status_code == 200 and found.headers["cache-control"] == "no-store"
    assert found.json() == {"hits": []}, "its copy signature tells the other half apart"


def test_duplicates_of_an_unknown_id_are_404_and_a_bad_filter_400(http, catalogue):
    chelsea = sha(catalogue.photos["chelsea"])
    for missing in (copies(http, "no-such-id"), copies(http, CRAFTED_ID), copies(http, chelsea, "shop")):
        assert missing.status_code == 404 and "holds no image with this id" in missing.json()["error"]
    refused = copies(http, chelsea, filter='metadata["category"] ==')
    assert refused.status_code == 400 and "filter" in refused.json()["error"]


def test_the_namespace_header_decides_for_thumbnails_as_it_does_for_searches(http, catalogue):
    chelsea = sha(catalogue.photos["chelsea"])
    tenant = thumbnail(http, "shop-chelsea", **{HEADER: "shop"})
    assert tenant.status_code == 200 and tenant.headers["vary"] == HEADER
    assert_no_thumbnail(thumbnail(http, chelsea, **{HEADER: "shop"}), "namespace 'shop' holds no image")
    refused = thumbnail(http, "shop-chelsea", "default", **{HEADER: "shop"})
    assert refused.status_code == 400 and "disagrees with header" in refused.json()["error"]


def test_stored_files_the_server_cannot_show_are_404_and_never_served_as_they_are(http):
    assert thumbnail(http, "file-uri", "shop").status_code == 200, "a file:// uri is a local file"
    assert_no_thumbnail(thumbnail(http, "not-an-image", "shop"), "cannot be shown: not a supported image")
    assert_no_thumbnail(thumbnail(http, "gone", "shop"), "cannot be read: No such file or directory")
    assert_no_thumbnail(thumbnail(http, "fifo", "shop"), "not a regular file")
    assert_no_thumbnail(thumbnail(http, "https-unmapped", "shop"), "cannot read https:// images")
    assert "--thumbnail-base-url" in thumbnail(http, "https-unmapped", "shop").json()["error"]
    # An object is read with the server's own credentials; this server has none.
    assert_no_thumbnail(thumbnail(http, "s3-unmapped", "shop"), "cannot be read: s3://bucket/catalogue/chelsea.jpg")
    assert "no AWS credentials found" in thumbnail(http, "s3-unmapped", "shop").json()["error"]


def test_a_uri_under_a_base_url_is_shown_from_there(http):
    response = thumbnail(http, "mapped", "shop")
    assert response.status_code == 307
    assert response.headers["location"] == MAPPED_URL + "chelsea.jpg"


# In a real browser ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        driver.set_page_load_timeout(60)
        yield driver


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ["TEST_ARTIFACTS_DIR"]) if os.environ.get("TEST_ARTIFACTS_DIR") else None
    folder = folder or tmp_path_factory.mktemp("artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(driver, condition, what: str, timeout_s: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(lambda d: condition(d), message=what)


def open_page(driver, server) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{server.http_url}/ui")
    wait(driver, lambda d: d.find_element(By.ID, "model-version").text not in ("", "…"), "the model metadata")


def searched(driver, start, what: str) -> None:
    """Do `start(driver)` and wait until the page has finished the search it starts."""
    from selenium.webdriver.common.by import By

    results = driver.find_element(By.ID, "results")
    before = int(results.get_attribute("data-searches") or 0)
    start(driver)
    wait(driver, lambda d: int(results.get_attribute("data-searches") or 0) > before, what)


def search_with(driver, photo: Path) -> None:
    from selenium.webdriver.common.by import By

    searched(driver, lambda d: d.find_element(By.ID, "photo").send_keys(str(photo)), f"the search with {photo.name}")
    assert driver.find_element(By.ID, "results").get_attribute("data-query") == f"image:{photo.name}"


def hits(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results > li.hit")


def searches_served(server) -> list[str]:
    """The protocol of every search the server has logged, in order."""
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [line["protocol"] for line in lines if line.get("message") == "request" and line["model"] == "image-search"]


def previews_settled(driver) -> bool:
    """Every result shows its thumbnail, or a placeholder because it has none."""
    from selenium.webdriver.common.by import By

    for hit in hits(driver):
        image = hit.find_element(By.CSS_SELECTOR, ".thumbnail")
        shown = image.get_property("complete") and image.get_property("naturalWidth") > 0
        if not shown and "no-preview" not in hit.get_attribute("class"):
            return False
    return bool(hits(driver))


def set_field(driver, field: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, field)
    element.clear()
    if text:
        element.send_keys(text)


def test_a_photo_finds_itself_first_and_a_click_finds_more_like_the_result(browser, page, catalogue, artifacts):
    from selenium.webdriver.common.by import By

    server, shop, _ = page
    open_page(browser, server)
    text = {name: browser.find_element(By.ID, name).text for name in ("model-name", "model-version", "images")}
    assert text == {
        "model-name": "image-search",
        "model-version": VERSION,
        "images": f"{20 + len(shop)} (20 in namespace default)",
    }
    assert browser.find_element(By.ID, "collection").text.startswith("page_")
    assert not browser.find_element(By.ID, "text-form").is_displayed(), "an image-only model takes no words"

    chelsea = catalogue.photos["chelsea"]
    served_before = len(searches_served(server))
    search_with(browser, chelsea)
    assert browser.find_element(By.ID, "results").get_attribute("data-state") == "done"
    first, second = hits(browser)[:2]
    assert len(hits(browser)) == 10
    assert first.get_attribute("data-id") == sha(chelsea)
    assert first.find_element(By.CSS_SELECTOR, ".score").text == "1.00"
    assert "animals" in first.find_element(By.CSS_SELECTOR, ".metadata").text
    wait(browser, previews_settled, "the thumbnails")
    image = first.find_element(By.CSS_SELECTOR, ".thumbnail")
    assert image.get_property("naturalWidth") == THUMBNAIL_SIZE, "chelsea is wider than tall"
    assert sha(chelsea) in image.get_attribute("src")
    assert not browser.find_elements(By.CSS_SELECTOR, "#results .no-preview"), "every local photo has its thumbnail"
    browser.save_screenshot(str(artifacts / "search-page.png"))

    neighbour = second.get_attribute("data-id")
    searched(browser, lambda d: second.find_element(By.CSS_SELECTOR, "button.more-like-this").click(), "more like it")
    results = browser.find_element(By.ID, "results")
    assert (results.get_attribute("data-query"), results.get_attribute("data-state")) == (f"id:{neighbour}", "done")
    found = [hit.get_attribute("data-id") for hit in hits(browser)]
    assert len(found) == 10 and neighbour not in found, "more-like-this leaves the image itself out"
    assert browser.find_element(By.ID, "query-caption").text.startswith("More like")
    assert searches_served(server)[served_before:] == ["v2-rest", "v2-rest"], "the page searches through V2 REST"
    browser.save_screenshot(str(artifacts / "search-page-more-like-this.png"))


def test_a_bad_upload_and_a_bad_filter_are_shown_in_words(browser, page, catalogue, artifacts):
    from selenium.webdriver.common.by import By

    server, _, workdir = page
    open_page(browser, server)
    error = browser.find_element(By.ID, "error")
    search_with(browser, workdir / "notes.jpg")
    assert browser.find_element(By.ID, "results").get_attribute("data-state") == "error"
    assert error.is_displayed() and not hits(browser)
    assert (
        error.text
        == "The server refused the request: image 0: not a supported image: not one of BMP, GIF, JPEG, PNG, WEBP"
    )
    browser.save_screenshot(str(artifacts / "search-page-bad-upload.png"))

    set_field(browser, "filter", 'metadata["category"] ==')
    search_with(browser, catalogue.photos["coffee"])
    assert error.text.startswith("The server refused the request: filter"), error.text
    set_field(browser, "filter", 'metadata["category"] == "space"')
    search_with(browser, catalogue.photos["coffee"])
    assert not error.is_displayed()
    assert {hit.get_attribute("data-id") for hit in hits(browser)} == {
        sha(catalogue.photos["rocket"]),
        sha(catalogue.photos["moon"]),
    }


def test_images_the_server_cannot_show_are_placeholders_and_links(browser, page, catalogue):
    from selenium.webdriver.common.by import By

    server, shop, _ = page
    open_page(browser, server)
    set_field(browser, "filter", "")
    set_field(browser, "namespace", "shop")
    search_with(browser, catalogue.photos["chelsea"])
    wait(browser, previews_settled, "every thumbnail shown or replaced by a placeholder")
    by_id = {hit.get_attribute("data-id"): hit for hit in hits(browser)}
    assert set(by_id) == set(shop)
    unshown = {image_id for image_id, hit in by_id.items() if "no-preview" in hit.get_attribute("class")}
    assert unshown == {"s3-unmapped", "https-unmapped", "not-an-image", "gone", "fifo", "mapped"}
    link = by_id["https-unmapped"].find_element(By.CSS_SELECTOR, ".uri a")
    assert link.get_attribute("href") == shop["https-unmapped"]
    assert by_id["s3-unmapped"].find_element(By.CSS_SELECTOR, ".placeholder").text == "no preview"
    wait(browser, lambda d: d.find_element(By.ID, "images").text.endswith(f"({len(shop)} in namespace shop)"), "count")


def rest_search_ids(server, photo: Path, namespace: str | None = None, **parameters) -> list[str]:
    """The ids a V2 REST search answers with, as a client would ask for them."""
    image = base64.b64encode(photo.read_bytes()).decode()
    body = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}],
        "parameters": {"top_k": 10, **parameters},
    }
    headers = {HEADER: namespace} if namespace else {}
    response = httpx.post(f"{server.http_url}/v2/models/image-search/infer", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output["data"] for output in response.json()["outputs"]}
    return [image_id for image_id in outputs["ids"] if image_id]


def test_the_group_by_and_diversity_controls_shape_the_search_as_the_api_does(browser, page, catalogue, artifacts):
    from selenium.webdriver.common.by import By

    server, _, _ = page
    open_page(browser, server)
    for field in ("filter", "namespace", "diversity", "group-by"):
        set_field(browser, field, "")
    chelsea = catalogue.photos["chelsea"]

    set_field(browser, "group-by", "category")
    search_with(browser, chelsea)
    grouped = [hit.get_attribute("data-id") for hit in hits(browser)]
    assert grouped == rest_search_ids(server, chelsea, group_by="category")
    # The two space photos share a group, so only one of them is shown.
    assert len({sha(catalogue.photos["rocket"]), sha(catalogue.photos["moon"])} & set(grouped)) == 1
    browser.save_screenshot(str(artifacts / "search-page-group-by.png"))

    set_field(browser, "group-by", "")
    set_field(browser, "diversity", "0.9")
    search_with(browser, chelsea)
    diverse = [hit.get_attribute("data-id") for hit in hits(browser)]
    assert diverse == rest_search_ids(server, chelsea, diversity=0.9)
    assert diverse[0] == sha(chelsea), "diversity keeps the best hit first"
    assert diverse != rest_search_ids(server, chelsea), "at 0.9 the order is not plain similarity's"
    assert browser.find_element(By.ID, "results").get_attribute("data-state") == "done"


def test_the_duplicates_view_of_a_hit_shows_only_its_copies(browser, page, catalogue, artifacts):
    from selenium.webdriver.common.by import By

    server, shop, _ = page
    open_page(browser, server)
    for field in ("filter", "diversity", "group-by"):
        set_field(browser, field, "")
    set_field(browser, "namespace", "shop")
    search_with(browser, catalogue.photos["chelsea"])
    first = hits(browser)[0]
    chosen = first.get_attribute("data-id")
    searched(browser, lambda d: first.find_element(By.CSS_SELECTOR, "button.duplicates-of").click(), "its duplicates")
    results = browser.find_element(By.ID, "results")
    shown = (results.get_attribute("data-query"), results.get_attribute("data-state"))
    assert shown == (f"duplicates:{chosen}", "done")
    assert browser.find_element(By.ID, "query-caption").text.startswith("Duplicates of")
    # Every row of namespace shop carries chelsea's vector: the others are its copies, and nothing else is.
    assert {hit.get_attribute("data-id") for hit in hits(browser)} == set(shop) - {chosen}
    browser.save_screenshot(str(artifacts / "search-page-duplicates.png"))
