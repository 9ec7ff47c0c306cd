"""The search page's parts that need no server: its flags, where a stored uri is shown from, thumbnail rendering under
the image limits, the bounded cache, and the files the package ships. tests/e2e/test_search_page.py runs the page on a
real server and in a real browser."""

import asyncio
import concurrent.futures
import fnmatch
import io
import re
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from predictor import environment
from predictor.cli.options import ui_settings
from predictor.cli.parser import build_parser
from predictor.errors import ThumbnailNotFound
from predictor.imaging.decoding import EXIF_ORIENTATION, ImageLimits, InvalidImage
from predictor.ui.routes import STATIC_FILES
from predictor.ui.settings import BaseUrl, UiSettings, parse_base_url
from predictor.ui.thumbnails import (
    Elsewhere,
    InStore,
    LocalFile,
    Thumbnail,
    ThumbnailCache,
    Thumbnails,
    Unreadable,
    locate,
    render_file,
)

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "predictor" / "ui" / "static"


def serve_args(*flags: str):
    return build_parser().parse_args(["serve", *flags])


def picture(width: int, height: int, mode: str = "RGB", format: str = "PNG", **save) -> bytes:
    image = Image.new(mode, (width, height), (200, 30, 30, 128)[: len(mode)])
    image.paste((20, 40, 220, 255)[: len(mode)], (0, 0, width // 2, height))
    out = io.BytesIO()
    image.save(out, format=format, **save)
    return out.getvalue()


# Flags ----------------------------------------------------------------------------------------------------------------


def test_the_page_is_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv(environment.UI, raising=False)
    assert ui_settings(serve_args()) == UiSettings(enabled=False)
    assert ui_settings(serve_args("--ui")).enabled
    monkeypatch.setenv(environment.UI, "true")
    assert ui_settings(serve_args()).enabled


def test_thumbnail_flags_become_settings_with_the_longest_prefix_first():
    settings = ui_settings(
        serve_args(
            "--ui",
            "--thumbnail-size=200",
            "--thumbnail-cache-bytes=0",
            "--thumbnail-base-url=s3://bucket/=https://cdn.example.com/all/",
            "--thumbnail-base-url=s3://bucket/shoes/=/static/shoes/",
        )
    )
    assert (settings.thumbnail_size, settings.thumbnail_cache_bytes) == (200, 0)
    assert settings.base_urls == (
        BaseUrl("s3://bucket/shoes/", "/static/shoes/"),
        BaseUrl("s3://bucket/", "https://cdn.example.com/all/"),
    )
    assert [base.origin for base in settings.base_urls] == [None, "https://cdn.example.com"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("https://cdn.example.com/", "must be PREFIX=URL"),
        ("s3://bucket/=", "must be PREFIX=URL"),
        ("s3://bucket/=ftp://files.example.com/", "http(s)://host/path/ or a path on this server"),
        ("s3://bucket/=cdn.example.com/images/", "http(s)://host/path/ or a path on this server"),
        ("s3://bucket/=https://cdn.example.com/?sig=1", "without a query or fragment"),
    ],
)
def test_a_base_url_that_cannot_work_is_refused_saying_what_to_write(text, reason):
    with pytest.raises(ValueError, match=re.escape(reason.split(" or ")[0])):
        parse_base_url(text)


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"thumbnail_size": 16}, "--thumbnail-size must be from 32 to 1024"),
        ({"thumbnail_size": 4096}, "--thumbnail-size must be from 32 to 1024"),
        ({"thumbnail_cache_bytes": -1}, "--thumbnail-cache-bytes must be from 0"),
        ({"base_urls": (BaseUrl("s3://a/", "/x/"), BaseUrl("s3://a/", "/y/"))}, "names a prefix twice"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_start_up(settings, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        UiSettings(enabled=True, **settings)


# Where a uri is shown from --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "where"),
    [
        ("/data/catalogue/cat.jpg", LocalFile(Path("/data/catalogue/cat.jpg"))),
        ("data/sample-catalogue/cat.jpg", LocalFile(Path("data/sample-catalogue/cat.jpg"))),
        ("file:///data/my%20photos/cat.jpg", LocalFile(Path("/data/my photos/cat.jpg"))),
        ("file://localhost/data/cat.jpg", LocalFile(Path("/data/cat.jpg"))),
        ("s3://bucket/shoes/red shoe?.jpg", Elsewhere("/static/shoes/red%20shoe%3F.jpg")),
        ("s3://bucket/hats/#1.jpg", Elsewhere("https://cdn.example.com/all/hats/%231.jpg")),
        ("/data/catalogue/dog.jpg", LocalFile(Path("/data/catalogue/dog.jpg"))),
    ],
)
def test_a_stored_uri_is_shown_from_the_longest_matching_base_url_or_read_locally(uri, where):
    settings = UiSettings(
        base_urls=(
            BaseUrl("s3://bucket/", "https://cdn.example.com/all/"),
            BaseUrl("s3://bucket/shoes/", "/static/shoes/"),
        )
    )
    assert locate(uri, settings.base_urls) == where


@pytest.mark.parametrize("uri", ["s3://bucket/cat.jpg", "gs://bucket/shop/a b.jpg"])
def test_objects_in_a_store_are_read_by_the_server_unless_a_base_url_maps_them(uri):
    assert locate(uri, ()) == InStore(uri)
    assert isinstance(locate(uri, (BaseUrl(uri[:5], "/static/"),)), Elsewhere)


@pytest.mark.parametrize("uri", ["https://example.com/cat.jpg", "file://nas/share/cat.jpg"])
def test_uris_the_server_cannot_read_have_no_thumbnail_and_say_how_to_map_them(uri):
    where = locate(uri, ())
    assert isinstance(where, Unreadable) and "--thumbnail-base-url" in where.reason
    assert uri.split("://")[0] + "://" in where.reason


def test_a_row_without_a_uri_has_no_thumbnail():
    assert isinstance(locate("", ()), Unreadable)


# Rendering ------------------------------------------------------------------------------------------------------------


def test_a_thumbnail_is_a_jpeg_that_fits_the_square_and_keeps_the_shape(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(picture(1200, 600, mode="RGBA"))
    image = Image.open(io.BytesIO(render_file(path, 256, ImageLimits())))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (256, 128))
    left, right = image.getpixel((32, 64)), image.getpixel((224, 64))
    assert left[2] > 200 and right[0] > 200, "the picture itself, not a blank"
    assert min(right) > 100, "transparency is composited onto white, as for queries"


def test_a_thumbnail_is_never_larger_than_its_picture(tmp_path):
    path = tmp_path / "small.png"
    path.write_bytes(picture(40, 30))
    assert Image.open(io.BytesIO(render_file(path, 256, ImageLimits()))).size == (40, 30)


def test_a_thumbnail_stands_as_the_camera_was_held(tmp_path):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored sideways: shown turned a quarter clockwise
    path = tmp_path / "phone.jpg"
    path.write_bytes(picture(400, 200, format="JPEG", exif=exif))
    assert Image.open(io.BytesIO(render_file(path, 100, ImageLimits()))).size == (50, 100)


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        (ImageLimits(max_bytes=1000), "over the limit of 1000"),
        (ImageLimits(max_pixels=10_000), "over the limit of 10000"),
    ],
)
def test_stored_files_are_held_to_the_query_image_limits(tmp_path, limits, words):
    path = tmp_path / "big.png"
    path.write_bytes(picture(500, 500))
    with pytest.raises(InvalidImage, match=words):
        render_file(path, 128, limits)


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="thumbnails")
        self.calls: list[str] = []

    def submit(self, function, *args, **kwargs):
        self.calls.append(function.__name__)
        return super().submit(function, *args, **kwargs)


def test_thumbnails_render_off_the_event_loop_once_then_come_from_the_cache(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(picture(300, 200))
    executor = CountingExecutor()
    thumbnails = Thumbnails(UiSettings(thumbnail_size=64), ImageLimits(), executor)

    async def twice() -> tuple[Thumbnail, Thumbnail, str]:
        etag = await thumbnails.etag(LocalFile(path))
        return await thumbnails.render(LocalFile(path), etag), await thumbnails.render(LocalFile(path), etag), etag

    try:
        first, second, etag = asyncio.run(twice())
        assert first is second and first.etag == etag
        assert executor.calls == ["_file_version", "render_file"], "the file is read and decoded in the executor, once"
        path.write_bytes(picture(301, 200))
        assert asyncio.run(thumbnails.etag(LocalFile(path))) != etag, "a changed file is a new thumbnail"
    finally:
        executor.shutdown()


def test_files_that_are_not_images_are_thumbnail_not_found(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    thumbnails = Thumbnails(UiSettings(), ImageLimits(), concurrent.futures.ThreadPoolExecutor(1))
    with pytest.raises(ThumbnailNotFound, match="cannot be shown: not a supported image"):
        asyncio.run(thumbnails.render(LocalFile(path), '"x"'))
    with pytest.raises(ThumbnailNotFound, match="not a regular file"):
        asyncio.run(thumbnails.etag(LocalFile(tmp_path)))


# The cache ------------------------------------------------------------------------------------------------------------


def test_the_cache_keeps_the_most_recently_used_within_its_byte_bound():
    cache = ThumbnailCache(max_bytes=250)
    for key in "abc":
        cache.put(key, Thumbnail(b"x" * 100, key))
    assert (len(cache), cache.bytes, cache.get("a")) == (2, 200, None), "the oldest went first"
    assert cache.get("b") is not None  # b is now the most recently used
    cache.put("d", Thumbnail(b"x" * 100, "d"))
    assert cache.get("c") is None and cache.get("b") is not None and cache.get("d") is not None
    cache.put("huge", Thumbnail(b"x" * 300, "huge"))
    assert cache.get("huge") is None and cache.bytes == 200, "one entry larger than the bound is not kept"
    empty = ThumbnailCache(max_bytes=0)
    empty.put("a", Thumbnail(b"x", "a"))
    assert len(empty) == 0


# The files the package ships ------------------------------------------------------------------------------------------


def test_every_page_file_is_shipped_as_package_data_and_served_by_name():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["predictor"]
    shipped = {path.relative_to(REPO / "predictor").as_posix() for path in STATIC.iterdir()}
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in shipped), shipped
    assert {f"ui/static/{name}" for name in STATIC_FILES} == shipped, "each file is served, and only these"


def test_the_page_loads_nothing_from_elsewhere():
    for path in STATIC.iterdir():
        text = path.read_text()
        external = re.findall(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", text)
        assert not external, f"{path.name} loads from another host: {external}"
        assert "@import" not in text and "eval(" not in text and ".innerHTML" not in text, path.name
    page = (STATIC / "index.html").read_text()
    referenced = set(re.findall(r'(?:src|href)="static/([^"]+)"', page))
    assert referenced == set(STATIC_FILES) - {"index.html"}
