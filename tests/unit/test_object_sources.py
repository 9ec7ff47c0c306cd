"""The pure parts of object-store sources: URIs, the prefix pattern handed to Milvus, reading ahead in order."""

import threading

import pytest

from predictor.index.fetching import prefetched
from predictor.index.milvus import like_prefix
from predictor.index.object_store import ObjectUri, is_object_uri, parse_object_uri


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("s3://photos", ObjectUri("s3", "photos", "")),
        ("s3://photos/", ObjectUri("s3", "photos", "")),
        ("s3://photos/shop", ObjectUri("s3", "photos", "shop/")),
        ("gs://photos/shop/2026/", ObjectUri("gs", "photos", "shop/2026/")),
    ],
)
def test_a_prefix_names_a_folder_of_its_bucket(text, parsed):
    assert parse_object_uri(text) == parsed
    assert parse_object_uri(text).of("shop/a.jpg") == f"{parsed.scheme}://photos/shop/a.jpg"


@pytest.mark.parametrize("text", ["s3://", "s3:///key", "https://photos/shop", "photos/shop"])
def test_anything_else_is_refused_with_the_form_it_should_have(text):
    with pytest.raises(ValueError, match=r"s3://BUCKET\[/PREFIX\] or gs://BUCKET\[/PREFIX\]"):
        parse_object_uri(text)


def test_only_s3_and_gs_uris_are_object_sources():
    assert is_object_uri("s3://b/p") and is_object_uri("gs://b")
    assert not is_object_uri("/data/s3:/x") and not is_object_uri("photos") and not is_object_uri("https://b/p")


@pytest.mark.parametrize(
    ("prefix", "pattern"),
    [
        ("s3://photos/shop/", "s3://photos/shop/%"),
        ("s3://photos/a_b/", "s3://photos/a%"),
        ("/data/100%/", "/data/100%"),
        ("/data/a\\b/", "/data/a%"),
    ],
)
def test_the_like_pattern_stops_before_any_character_a_milvus_reads_specially(prefix, pattern):
    assert like_prefix(prefix) == pattern


def test_reads_come_back_in_order_with_failures_in_place_and_never_more_than_the_window_in_flight():
    in_flight, most = 0, 0
    lock = threading.Lock()

    def read(number: int) -> bytes:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        try:
            if number == 3:
                raise OSError("gone")
            return str(number).encode()
        finally:
            with lock:
                in_flight -= 1

    results = list(prefetched(range(10), read, workers=4, window=3))
    assert [item for item, _ in results] == list(range(10))
    assert [data for _, data in results if not isinstance(data, Exception)] == [
        str(n).encode() for n in range(10) if n != 3
    ]
    assert isinstance(results[3][1], OSError)
    assert most <= 3


def test_stopping_early_cancels_the_reads_not_yet_started():
    started = []

    def read(number: int) -> bytes:
        started.append(number)
        return b""

    for item, _ in prefetched(range(1000), read, workers=2, window=4):
        if item == 1:
            break
    assert len(started) <= 6
