"""`image-search duplicates` on both Milvus kinds: planted copies of four photos come out as four clusters and
nothing else is clustered, not even the two halves of a stereo pair (one scene, photographed twice); `--mark` lets a
filter keep one image per cluster."""

import io
import json
import uuid

import pytest
from PIL import Image

from benchmarks.duplicate_threshold import planted_copy
from harness.predictor_server import run_cli
from predictor.imaging.sample_catalogue import STEREO_PAIR
from tests.e2e.conftest import BACKENDS, near_duplicate

OTHERS = ["coins", "clock", "camera", "rocket", "brick", "grass", "astronaut", *STEREO_PAIR]
PLANTED = {"coffee": 3, "moon": 2}
# Edits that leave the embedding scoring a copy well below 0.9 against its original (docs/search-index.md).
HARDER = {"chelsea": ("cropped", "brightened")}
# Two copies cut from opposite corners of a photo that is not indexed itself: neither holds the other, so only their
# aligned overlap makes them duplicates.
CORNERS = {"retina": ((0, 0, 0.86, 0.86), (0.14, 0.14, 1, 1))}


def corner_copy(original: bytes, box: tuple[float, float, float, float]) -> bytes:
    image = Image.open(io.BytesIO(original)).convert("RGB")
    width, height = image.size
    left, top, right, bottom = box
    out = io.BytesIO()
    image.crop((round(width * left), round(height * top), round(width * right), round(height * bottom))).save(
        out, format="JPEG", quality=85
    )
    return out.getvalue()


@pytest.fixture(scope="module", params=BACKENDS)
def planted(request, catalogue, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("duplicates")
    uri = str(workdir / "milvus.db") if request.param == "milvus-lite" else request.getfixturevalue("milvus_server_uri")
    photos = workdir / "photos"
    photos.mkdir()
    for name in [*OTHERS, *PLANTED, *HARDER]:
        (photos / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
    for name, edits in HARDER.items():
        for edit in edits:
            (photos / f"{name}-{edit}.jpg").write_bytes(planted_copy(catalogue.photos[name].read_bytes(), edit))
    for name, boxes in CORNERS.items():
        for number, box in enumerate(boxes):
            (photos / f"{name}-corner{number}.jpg").write_bytes(corner_copy(catalogue.photos[name].read_bytes(), box))
    for name, copies in PLANTED.items():
        copy = catalogue.photos[name].read_bytes()
        for number in range(copies):
            copy = near_duplicate(copy)
            (photos / f"{name}-copy{number}.jpg").write_bytes(copy)
    where = ["--milvus-uri", uri, "--collection", f"dups_{uuid.uuid4().hex[:8]}"]
    indexed = run_cli("index", str(photos), *where)
    assert indexed.returncode == 0, indexed.stderr
    return where, workdir


def clusters(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_planted_copies_are_clustered_and_nothing_else_is(planted):
    where, workdir = planted
    out = workdir / "clusters.jsonl"
    found = run_cli("duplicates", *where, "--out", str(out))
    assert found.returncode == 0, found.stderr
    assert "4 clusters of 12 images at threshold 0.9" in found.stderr
    groups = sorted(sorted(uri.rsplit("/", 1)[1] for uri in cluster["uris"]) for cluster in clusters(out))
    assert groups == [
        ["chelsea-brightened.jpg", "chelsea-cropped.jpg", "chelsea.jpg"],
        ["coffee-copy0.jpg", "coffee-copy1.jpg", "coffee-copy2.jpg", "coffee.jpg"],
        ["moon-copy0.jpg", "moon-copy1.jpg", "moon.jpg"],
        ["retina-corner0.jpg", "retina-corner1.jpg"],
    ]
    for cluster in clusters(out):
        assert len(cluster["ids"]) == len(cluster["uris"]) and 0.9 <= cluster["min_score"] <= 1.0


def test_marks_let_a_filter_keep_one_image_per_cluster(planted):
    where, workdir = planted
    marked = run_cli("duplicates", *where, "--out", str(workdir / "marked.jsonl"), "--mark", "dup")
    assert marked.returncode == 0, marked.stderr
    assert "marked 12 images" in marked.stderr
    again = workdir / "after.jsonl"
    hidden = run_cli("duplicates", *where, "--out", str(again), "--filter", 'not exists metadata["dup_copy"]')
    assert hidden.returncode == 0, hidden.stderr
    assert clusters(again) == [], "one image of each cluster is left, so nothing is a duplicate any more"
    kept = run_cli("duplicates", *where, "--out", str(again), "--filter", 'exists metadata["dup"]')
    assert len(clusters(again)) == 4, kept.stderr


def test_a_filtered_run_marks_and_unmarks_only_the_rows_its_filter_keeps(planted):
    """Two shops deduplicated one after the other, as a catalogue kept per shop is: the second run leaves the first
    shop's marks alone, although they are on rows in none of its clusters."""
    where, workdir = planted
    shops = workdir / "shops.jsonl"
    shops.write_text(
        "".join(
            json.dumps({"path": path.name, "shop": "a" if path.name.startswith(("coffee", "chelsea")) else "b"}) + "\n"
            for path in sorted((workdir / "photos").glob("*.jpg"))
        )
    )
    assigned = run_cli("metadata", "set", *where, "--metadata", str(shops), "--root", str(workdir / "photos"))
    assert assigned.returncode == 0, assigned.stderr
    for shop, marked in (("a", 7), ("b", 5)):
        run = run_cli(
            "duplicates",
            *where,
            "--out",
            str(workdir / f"shop-{shop}.jsonl"),
            "--filter",
            f'metadata["shop"] == "{shop}"',
            "--mark",
            "shop_dup",
        )
        assert run.returncode == 0, run.stderr
        assert f"marked {marked} images" in run.stderr
    both = workdir / "both-shops.jsonl"
    kept = run_cli("duplicates", *where, "--out", str(both), "--filter", 'exists metadata["shop_dup"]')
    assert kept.returncode == 0, kept.stderr
    groups = sorted(
        sorted(uri.rsplit("/", 1)[1].split("-")[0].split(".")[0] for uri in c["uris"]) for c in clusters(both)
    )
    assert [group[0] for group in groups] == ["chelsea", "coffee", "moon", "retina"], "both shops' marks are kept"


def test_a_threshold_outside_0_to_1_is_one_clear_line(planted):
    where, workdir = planted
    refused = run_cli("duplicates", *where, "--out", str(workdir / "x.jsonl"), "--threshold", "1.5")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "--threshold must be a similarity in (0, 1]" in refused.stderr


def test_an_output_or_mark_it_could_not_use_is_refused_before_the_search(planted):
    where, workdir = planted
    for out, message in ((workdir / "missing" / "x.jsonl", "there is no folder"), (workdir, "is a folder")):
        refused = run_cli("duplicates", *where, "--out", str(out))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert message in refused.stderr and "duplicates in" not in refused.stderr, "refused before any search"
    out = workdir / "never.jsonl"
    bad_mark = run_cli("duplicates", *where, "--out", str(out), "--mark", "1st")
    assert bad_mark.returncode != 0 and "--mark '1st'" in bad_mark.stderr
    assert "duplicates in" not in bad_mark.stderr and not out.exists()
