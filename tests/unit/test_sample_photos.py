"""The shipped sample photos are scikit-image's photographs, written by `python -m tools.sample_photos`."""

import subprocess
import sys

import numpy as np
from PIL import Image
from skimage import data

from harness.predictor_server import REPO_ROOT
from predictor.imaging.sample_catalogue import PHOTOS, STEREO_PAIR, photo, stereo_pair, write_catalogue

SHIPPED = REPO_ROOT / "predictor" / "imaging" / "sample_photos"


def test_the_package_ships_every_photo_and_no_more():
    assert sorted(path.stem for path in SHIPPED.iterdir()) == sorted([*PHOTOS, *STEREO_PAIR])
    assert sum(path.stat().st_size for path in SHIPPED.iterdir()) < 3_000_000


def test_each_shipped_photo_is_its_scikit_image_original():
    for name in PHOTOS:
        original = np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB"), dtype=np.float32)
        shipped = photo(name)
        assert shipped.shape == original.shape, name
        assert np.abs(shipped - original).mean() < 4, name
    left, right, _ = data.stereo_motorcycle()
    assert [p.shape for p in stereo_pair()] == [left.shape, right.shape]


def test_the_tool_writes_the_shipped_bytes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools.sample_photos", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    for written in tmp_path.iterdir():
        assert written.read_bytes() == (SHIPPED / written.name).read_bytes(), written.name


def test_the_catalogue_is_the_shipped_files(tmp_path):
    paths = write_catalogue(tmp_path / "catalogue")
    assert len(paths) == len(PHOTOS) + len(STEREO_PAIR)
    for path in paths:
        assert path.read_bytes() == (SHIPPED / path.name).read_bytes()
