"""Metadata manifests: JSON Lines and CSV, checked as a whole before anything is written."""

import json

import pytest

from predictor.index.metadata_manifests import InvalidManifest, read_manifest


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_json_lines_keep_types_and_name_images_by_path_or_id(tmp_path):
    path = write(
        tmp_path,
        "m.jsonl",
        json.dumps({"path": "./birds/robin.jpg", "category": "birds", "price": 12.5, "tags": ["red"]})
        + "\n\n"
        + json.dumps({"id": "abc", "category": "cats", "gone": None})
        + "\n",
    )
    manifest = read_manifest(path)
    robin, cat = manifest.rows
    assert (robin.path, robin.id, robin.fields) == (
        "birds/robin.jpg",
        None,
        {"category": "birds", "price": 12.5, "tags": ["red"]},
    )
    assert (cat.line, cat.path, cat.id, cat.fields) == (3, None, "abc", {"category": "cats", "gone": None})
    assert manifest.for_image(["birds/robin.jpg"], "whatever") is robin
    assert manifest.for_image(["elsewhere.jpg"], "abc") is cat
    assert manifest.for_image(["elsewhere.jpg"], "zzz") is None


def test_csv_cells_that_read_as_numbers_become_numbers_and_empty_cells_no_field(tmp_path):
    path = write(tmp_path, "m.csv", "path,id,category,price,zip\nrobin.jpg,bird-1,birds,12,01234\nowl.jpg,,birds,,\n")
    robin, owl = read_manifest(path).rows
    assert (robin.id, robin.fields) == ("bird-1", {"category": "birds", "price": 12, "zip": "01234"})
    assert (owl.id, owl.fields) == (None, {"category": "birds"})


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("m.jsonl", '{"path": "a.jpg"}\n{not json}\n', "line 2: not valid JSON"),
        ("m.jsonl", '["a.jpg"]\n', "line 1: each line must be a JSON object"),
        ("m.jsonl", '{"category": "birds"}\n', "line 1: the row names no image"),
        ("m.jsonl", '{"path": ""}\n', "'path' must be a non-empty string"),
        ("m.jsonl", '{"id": 5}\n', "'id' must be a non-empty string"),
        (
            "m.jsonl",
            '{"path": "a.jpg"}\n{"path": "./a.jpg"}\n',
            "line 2: path 'a.jpg' is named again (first on line 1)",
        ),
        ("m.jsonl", '{"path": "a.jpg", "id": "x"}\n{"id": "x"}\n', "id 'x' is named again"),
        ("m.jsonl", json.dumps({"path": "a.jpg", "blob": "x" * 70_000}) + "\n", "Milvus stores at most 65536"),
        ("m.jsonl", "\n\n", "holds no rows"),
        ("m.csv", "name,category\na.jpg,birds\n", "needs a header row with a 'path' or an 'id' column"),
        ("m.csv", "path,category\na.jpg,birds,extra\n", "more cells than the header has columns"),
        ("m.csv", "path,path\na.jpg,b.jpg\n", "empty or repeated column name"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_file_line_and_problem(tmp_path, name, text, problem):
    path = write(tmp_path, name, text)
    with pytest.raises(InvalidManifest) as refused:
        read_manifest(path)
    assert str(path) in str(refused.value) and problem in str(refused.value)


def test_a_manifest_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"path,category\n\xff\xfe.jpg,x\n")
    with pytest.raises(InvalidManifest, match="not UTF-8"):
        read_manifest(path)
