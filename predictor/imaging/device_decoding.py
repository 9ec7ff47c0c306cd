"""JPEG decoding on the model's GPU (nvJPEG through torchvision) for the images where it gives what Pillow gives.

Only plain RGB or greyscale JPEGs within the limits go this way; everything else, and any batch nvJPEG refuses, takes
the CPU path in decoding.py, which also owns every error message a caller sees. The geometry (crop, letterbox or
resize) is decoding.py's `layout()`, so both paths feed the network the same view of a photo. Results come back as HWC
uint8 arrays, the same contract as the CPU path, so batching and the backbone do not care which decoder ran.
"""

import contextlib
import io
import logging
import math
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from predictor.imaging.decoding import EXIF_ORIENTATION, ImageLimits, Preprocessing, layout

logger = logging.getLogger(__name__)

# Decoded full-size frames of one nvJPEG call stay under this many pixels (3 bytes each), whatever the request holds.
PIXELS_PER_DECODE_CALL = 200_000_000

_streams = threading.local()

# torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec, which is not a dependency here; the
# warning says nothing a server operator can act on.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
)


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    orientation: int


def wants_device_decode(device: torch.device) -> bool:
    """nvJPEG exists only on CUDA; on the CPU, Pillow's reduced-scale (draft) decode is faster than a full decode."""
    return device.type == "cuda"


def jpeg_header(data: bytes, limits: ImageLimits) -> JpegHeader | None:
    """Size and EXIF orientation of a JPEG the device may decode, read from the header only; None sends it to the CPU.

    CMYK, multi-picture (MPO) and anything over the limits take the CPU path, which rejects or converts them exactly
    as it does for every other image.
    """
    if not data.startswith(b"\xff\xd8\xff") or len(data) > limits.max_bytes:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
                if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                    return None
                width, height = image.size
                if width * height > limits.max_pixels:
                    return None
                orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - any header the parser dislikes is the CPU path's to judge and report
        return None
    return JpegHeader(width, height, orientation if orientation in range(1, 9) else 1)


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn a decoded CHW image upright by its EXIF orientation, as Pillow's `ImageOps.exif_transpose` does."""
    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1, 2)
    if orientation == 4:
        return image.flip(1)
    if orientation == 5:
        return image.transpose(1, 2)
    if orientation == 6:
        return image.rot90(-1, (1, 2))
    if orientation == 7:
        return image.transpose(1, 2).flip(1, 2)
    if orientation == 8:
        return image.rot90(1, (1, 2))
    return image


def to_model_input(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """CHW uint8 to the model's square input, by the CPU path's `layout()`, with antialiased bilinear resampling."""
    _, height, width = image.shape
    geometry = layout(width, height, preprocessing)
    left, top, right, bottom = geometry.box
    x0, y0 = min(max(math.floor(left + 0.5), 0), width - 1), min(max(math.floor(top + 0.5), 0), height - 1)
    x1, y1 = max(min(math.floor(right + 0.5), width), x0 + 1), max(min(math.floor(bottom + 0.5), height), y0 + 1)
    region = image[:, y0:y1, x0:x1].unsqueeze(0).float()
    new_width, new_height = geometry.size
    resized = F.interpolate(region, size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=True)
    resized = resized.round_().clamp_(0, 255).to(torch.uint8)[0]
    side = preprocessing.input_size
    if geometry.size == (side, side):
        return resized
    canvas = torch.tensor(preprocessing.pad_color, dtype=torch.uint8, device=image.device).view(3, 1, 1)
    canvas = canvas.expand(3, side, side).clone()
    x, y = geometry.offset
    canvas[:, y : y + new_height, x : x + new_width] = resized
    return canvas


def _stream(device: torch.device) -> contextlib.AbstractContextManager:
    """A CUDA stream per decoding thread, so decoding overlaps the forward pass on the default stream."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    streams = getattr(_streams, "by_device", None)
    if streams is None:
        streams = _streams.by_device = {}
    if device not in streams:
        streams[device] = torch.cuda.Stream(device)
    return torch.cuda.stream(streams[device])


def _calls(headers: list[JpegHeader]) -> list[list[int]]:
    """Positions grouped so that each decode call's full-size frames stay within the pixel budget."""
    groups: list[list[int]] = []
    pixels = 0
    for position, header in enumerate(headers):
        size = header.width * header.height
        if not groups or pixels + size > PIXELS_PER_DECODE_CALL:
            groups.append([])
            pixels = 0
        groups[-1].append(position)
        pixels += size
    return groups


def decode_on_device(
    images: list[bytes], headers: list[JpegHeader], preprocessing: Preprocessing, device: torch.device
) -> np.ndarray:
    """Decode, orient and lay out JPEGs on `device`; returns [N, size, size, 3] uint8 on the host.

    Blocking; call it from a worker thread. Raises whatever nvJPEG raises, for the caller to fall back on the CPU.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    crops: list[torch.Tensor] = [torch.empty(0)] * len(images)
    with _stream(device), torch.inference_mode():
        for group in _calls(headers):
            encoded = [torch.frombuffer(bytearray(images[position]), dtype=torch.uint8) for position in group]
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
            for position, image in zip(group, decoded, strict=True):
                crops[position] = to_model_input(orient(image, headers[position].orientation), preprocessing)
        # A synchronous copy on this stream: the crops are complete when it returns.
        return torch.stack(crops).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def prepare_on_device(
    images: list[bytes], limits: ImageLimits, preprocessing: Preprocessing, device: torch.device
) -> dict[int, np.ndarray]:
    """Pixels for each image the device decoded, by position; the positions missing are the CPU path's to do."""
    found = {position: jpeg_header(data, limits) for position, data in enumerate(images)}
    headers = {position: header for position, header in found.items() if header is not None}
    positions = list(headers)
    if not positions:
        return {}
    try:
        pixels = decode_on_device(
            [images[position] for position in positions],
            [headers[position] for position in positions],
            preprocessing,
            device,
        )
    except RuntimeError as error:
        # nvJPEG refuses some valid files (and all corrupt ones); the CPU path decodes or explains them.
        logger.debug("device decode of %d JPEGs failed, decoding them on the CPU: %s", len(positions), error)
        return {}
    return dict(zip(positions, pixels, strict=True))
