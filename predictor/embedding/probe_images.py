"""Fixed sets of real photos the precision choice is checked and calibrated on, as model-input pixels.

Both come from the sample catalogue's photographs, which ship with the package as JPEGs, so every server builds the
same sets without a download. They are different pixels: the probe is the labelled sample (quadrants of eight large
photos and a stereo pair), the calibration set is the sample catalogue's other whole photos and their mirror images.
"""

import io

import numpy as np
from PIL import Image

from predictor.imaging.decoding import ImageLimits, Preprocessing, load_pixels
from predictor.imaging.sample_catalogue import PHOTOS, QUADRANT_CATEGORIES, photo, quadrants, stereo_pair


def _model_input(pictures: list[np.ndarray], preprocessing: Preprocessing) -> np.ndarray:
    """Through the serving path's own decoding and geometry, from lossless PNGs of the photos."""
    encoded = []
    for picture in pictures:
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(picture)).convert("RGB").save(out, format="PNG", compress_level=1)
        encoded.append(out.getvalue())
    return np.stack([load_pixels(data, ImageLimits(), preprocessing) for data in encoded])


def probe_pixels(preprocessing: Preprocessing) -> np.ndarray:
    """[34, H, W, 3] uint8: the labelled sample's images."""
    pictures = [part for name in QUADRANT_CATEGORIES.values() for part in quadrants(photo(name))]
    return _model_input([*pictures, *stereo_pair()], preprocessing)


def calibration_pixels(preprocessing: Preprocessing) -> np.ndarray:
    """[36, H, W, 3] uint8: the sample catalogue's photos but the stereo pair (which the probe holds), also mirrored."""
    pictures = [photo(name) for name in PHOTOS]
    return _model_input([*pictures, *(np.fliplr(p) for p in pictures)], preprocessing)
