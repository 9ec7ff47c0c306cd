"""The GPU decode path, exercised on the CPU wherever its logic allows: torchvision decodes JPEGs on either device."""

import asyncio
import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from predictor.embedding.backbone import Backbone
from predictor.embedding.model_package import default_spec
from predictor.errors import InvalidRequest
from predictor.imaging import device_decoding as device_images
from predictor.imaging.decoding import ImageLimits, Preprocessing, decode_image, load_pixels
from predictor.imaging.device_decoding import JpegHeader, jpeg_header, orient, prepare_on_device, wants_device_decode
from predictor.observability.metrics import ServingMetrics
from predictor.serving import image_preparation as pixels_module

LIMITS = ImageLimits()
PREPROCESSING = Preprocessing()
CPU = torch.device("cpu")


def jpeg(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(data.chelsea())


def test_only_cuda_devices_decode_on_the_device():
    assert wants_device_decode(torch.device("cuda"))
    assert wants_device_decode(torch.device("cuda:1"))
    assert not wants_device_decode(CPU)


def test_header_of_a_plain_jpeg_gives_size_and_orientation(chelsea):
    exif = Image.Exif()
    exif[device_images.EXIF_ORIENTATION] = 6
    assert jpeg_header(jpeg(chelsea, exif=exif), LIMITS) == JpegHeader(chelsea.width, chelsea.height, 6)
    assert jpeg_header(jpeg(chelsea.convert("L")), LIMITS).orientation == 1


def test_anything_but_a_plain_jpeg_within_the_limits_is_left_to_the_cpu(chelsea):
    png = io.BytesIO()
    chelsea.save(png, format="PNG")
    encoded = jpeg(chelsea)
    assert jpeg_header(png.getvalue(), LIMITS) is None
    assert jpeg_header(jpeg(chelsea.convert("CMYK")), LIMITS) is None
    assert jpeg_header(encoded[:200], LIMITS) is None
    assert jpeg_header(encoded, ImageLimits(max_pixels=chelsea.width * chelsea.height - 1)) is None
    assert jpeg_header(encoded, ImageLimits(max_bytes=len(encoded) - 1)) is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillows_exif_transpose(orientation):
    from torchvision.io import ImageReadMode, decode_jpeg

    exif = Image.Exif()
    exif[device_images.EXIF_ORIENTATION] = orientation
    encoded = jpeg(Image.fromarray(data.chelsea()).resize((60, 40)), quality=100, exif=exif)
    expected = np.asarray(decode_image(encoded, LIMITS).image)
    raw = decode_jpeg(torch.frombuffer(bytearray(encoded), dtype=torch.uint8), mode=ImageReadMode.RGB)
    upright = orient(raw, jpeg_header(encoded, LIMITS).orientation).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(upright, expected)


@pytest.mark.parametrize("scale", [0.25, 1, 6])
def test_device_crops_match_the_cpu_path(chelsea, scale):
    encoded = jpeg(chelsea.resize((round(chelsea.width * scale), round(chelsea.height * scale))), quality=92)
    on_device = prepare_on_device([encoded], LIMITS, PREPROCESSING, CPU)[0]
    on_cpu = load_pixels(encoded, LIMITS, PREPROCESSING)
    assert on_device.shape == on_cpu.shape == (224, 224, 3) and on_device.dtype == np.uint8
    assert np.abs(on_device.astype(int) - on_cpu).mean() < 3


def test_device_and_cpu_crops_embed_alike(chelsea):
    backbone = Backbone(default_spec(), "cpu")
    backbone.load()
    preprocessing = backbone.spec.preprocessing
    images = [jpeg(chelsea), jpeg(Image.fromarray(data.astronaut()).resize((2048, 2048)))]
    on_device = prepare_on_device(images, LIMITS, preprocessing, CPU)
    on_cpu = np.stack([load_pixels(image, LIMITS, preprocessing) for image in images])
    device_embeddings = backbone.run(np.stack([on_device[0], on_device[1]])).embeddings
    cosines = (device_embeddings * backbone.run(on_cpu).embeddings).sum(axis=1)
    assert cosines.min() > 0.99


def test_only_device_decodable_images_come_back(chelsea):
    png = io.BytesIO()
    chelsea.save(png, format="PNG")
    decoded = prepare_on_device([png.getvalue(), jpeg(chelsea), b"not an image"], LIMITS, PREPROCESSING, CPU)
    assert sorted(decoded) == [1]


def test_a_batch_the_decoder_refuses_falls_back_to_the_cpu(chelsea):
    encoded = jpeg(chelsea)
    corrupt = encoded[:600] + bytes(400) + encoded[1000:2000]
    assert jpeg_header(corrupt, LIMITS) is not None
    assert prepare_on_device([encoded, corrupt], LIMITS, PREPROCESSING, CPU) == {}


def test_decode_calls_respect_the_pixel_budget(monkeypatch):
    monkeypatch.setattr(device_images, "PIXELS_PER_DECODE_CALL", 1000)
    headers = [JpegHeader(20, 20, 1), JpegHeader(20, 20, 1), JpegHeader(20, 30, 1), JpegHeader(40, 40, 1)]
    assert device_images._calls(headers) == [[0, 1], [2], [3]]


def test_requests_keep_their_order_and_errors_when_the_device_decodes(monkeypatch, chelsea):
    """The CUDA branch of prepare_images, run with the CPU as the device."""
    monkeypatch.setattr(pixels_module, "wants_device_decode", lambda device: True)
    metrics = ServingMetrics("device-decode-test", "v1")
    png = io.BytesIO()
    chelsea.save(png, format="PNG")
    small = jpeg(chelsea.resize((120, 80)))
    images = [jpeg(chelsea), png.getvalue(), small]
    prepared = asyncio.run(pixels_module.prepare_images(images, LIMITS, PREPROCESSING, metrics, CPU))
    expected = [load_pixels(image, LIMITS, PREPROCESSING) for image in images]
    for got, want in zip(prepared, expected, strict=True):
        assert np.abs(got.pixels.astype(int) - want).mean() < 3
    with pytest.raises(InvalidRequest, match="image 1: "):
        asyncio.run(pixels_module.prepare_images([small, b"\xff\xd8\xffjunk"], LIMITS, PREPROCESSING, metrics, CPU))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for nvJPEG")
def test_nvjpeg_crops_match_the_cpu_path(chelsea):
    images = [jpeg(chelsea), jpeg(Image.fromarray(data.astronaut()).resize((4032, 3024)))]
    on_gpu = prepare_on_device(images, LIMITS, PREPROCESSING, torch.device("cuda"))
    assert sorted(on_gpu) == [0, 1]
    for position, image in enumerate(images):
        assert np.abs(on_gpu[position].astype(int) - load_pixels(image, LIMITS, PREPROCESSING)).mean() < 3


GEOMETRIES = [
    Preprocessing(),
    Preprocessing(mode="letterbox", input_size=260, pad_color=(0, 255, 0)),
    Preprocessing(mode="resize", input_size=240),
]


@pytest.mark.parametrize("preprocessing", GEOMETRIES, ids=lambda p: p.mode)
@pytest.mark.parametrize("size", [(451, 300), (300, 451), (2048, 1365)])
def test_cpu_device_and_indexer_paths_lay_out_an_image_identically(preprocessing, size):
    """The server's CPU path, its device-decode path and the indexer feed the network the same picture: identical
    letterbox bars, content within rounding of the resampler."""
    from predictor.index.ingestion import _Candidate, _try_decode

    encoded = jpeg(Image.fromarray(data.astronaut()).resize(size), quality=95)
    server_cpu = pixels_module.prepare_image(encoded, LIMITS, preprocessing).pixels
    _, decoded = _try_decode(_Candidate(None, "id", encoded), LIMITS, preprocessing)
    indexer = decoded.pixels
    on_device = prepare_on_device([encoded], LIMITS, preprocessing, CPU)[0]
    np.testing.assert_array_equal(server_cpu, indexer)
    assert on_device.shape == server_cpu.shape == (preprocessing.input_size,) * 2 + (3,)
    padding = (server_cpu == (0, 255, 0)).all(axis=2) if preprocessing.mode == "letterbox" else None
    if padding is not None:
        assert padding.any()
        np.testing.assert_array_equal((on_device == (0, 255, 0)).all(axis=2), padding)
    content = ~padding if padding is not None else slice(None)
    assert np.abs(on_device.astype(int) - server_cpu)[content].mean() < 3
