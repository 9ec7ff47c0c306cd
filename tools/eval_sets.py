"""Evaluation sets built from images that Debian packages ship, so `make eval` needs no network and no repository
files: a development set of categorised pictures (GCompris), a cross-check set in another style (Wesnoth unit art by
race), near-duplicates of real photographs with realistic edits, and a fitting set for projections that is disjoint
from all three.

Each builder is idempotent: it writes `<out>/<set>/<category>/<file>` and leaves files that exist alone, so ids stay
stable between runs. Categories are the packages' own groupings (an activity's folder, a race), never chosen image
by image.
"""

import argparse
import hashlib
import io
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from predictor.evaluation.near_duplicates import near_duplicate
from predictor.imaging.decoding import to_rgb
from tools.rcc import ResourceFile

GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")
GAME_ART = Path("/usr/share/games/wesnoth/1.16/data/core/images")
WESNOTH_UNITS = GAME_ART / "units"
OPENCLIPART_SVG = Path("/usr/share/openclipart/svg")
SVG_SIDE = 512


class MissingSource(RuntimeError):
    """A Debian data package or tool the set is built from is not installed; the message says which."""


@dataclass(frozen=True)
class Selection:
    """Files of one GCompris resource file whose path (after `/resource/`) matches `pattern`."""

    rcc: str
    pattern: str


# The development set: one category per activity folder of visually alike pictures. Photographs and drawings both,
# because catalogues hold both.
GCOMPRIS_CATEGORIES: dict[str, tuple[Selection, ...]] = {
    "tools": (Selection("categorization", r"images/tools/.*\.webp"),),
    "renewable-energy": (Selection("categorization", r"images/renewable/.*\.webp"),),
    "monuments": (
        Selection("categorization", r"images/monuments/.*\.webp"),
        Selection("explore_monuments", r"\w+/\w+\.webp"),
    ),
    "fish": (
        Selection("categorization", r"images/fishes/.*\.webp"),
        Selection("clickgame", r"(?!sea\d)\w+\.webp"),
    ),
    "animal-photos": (
        Selection("erase", r"\w+\.webp"),
        Selection("explore_world_animals", r"animals/\w+\.webp"),
        Selection("explore_farm_animals", r"animals/\w+\.webp"),
    ),
    "planets": (Selection("solar_system", r"\w+\.webp"),),
    "musical-instruments": (Selection("instruments", r"(?!instruments|background)\w+\.svg"),),
    "chess-pieces": (Selection("chess", r"[bw][bknpqr]\.svg"),),
    "food-drawings": (Selection("babyshapes", r"food/\w+\.svg"),),
    "money": (Selection("money", r"[nc]\d+\w*\.svg"),),
    "animal-drawings": (Selection("memory", r"\d\d_(?!greenbaby|bluebaby)\w+\.svg"),),
    "digits": (Selection("categorization", r"images/numbers/\d+\.svg"), Selection("drawnumbers", r"[a-z]+\.svg")),
    "letters": (Selection("drawletters", r"[A-Z]1\.svg"), Selection("crane", r"letters/[a-z]\.svg")),
    "electric-components": (Selection("analog_electricity", r"(?!analog_electricity|connection)\w+\.svg"),),
}
# The development set's drawings: the style closest to a clip-art catalogue, scored on their own as well.
GCOMPRIS_DRAWINGS = (
    "musical-instruments",
    "chess-pieces",
    "food-drawings",
    "money",
    "animal-drawings",
    "digits",
    "letters",
    "electric-components",
)
# drawnumbers also holds its drawing board's dots and paper.
_NOT_DIGITS = re.compile(r"(point|paper)")

# The cross-check set: Wesnoth units grouped by race. Only each unit's standing picture; its animation frames would be
# near-copies of it. Races with fewer than five units, and the mixed "monsters" folder, are left out.
WESNOTH_RACES: dict[str, tuple[str, ...]] = {
    "drakes": ("drakes",),
    "dunefolk": ("dunefolk",),
    "dwarves": ("dwarves",),
    "elves": ("elves-wood",),
    "humans": ("human-loyalists", "human-magi", "human-outlaws", "human-peasants"),
    "merfolk": ("merfolk",),
    "nagas": ("nagas",),
    "orcs": ("orcs", "goblins"),
    "saurians": ("saurians",),
    "trolls": ("trolls",),
    "undead": ("undead", "undead-necromancers", "undead-skeletal"),
}

# The clip-art set: Open Clip Art Library drawings by the library's own top-level folders (sub-folders included), the
# eleven that hold pictures of things; "shapes", "signs_and_symbols", "special", "unsorted" and the near-empty
# folders are not categories of things. A seeded sample of each keeps the set at a catalogue's size and its
# categories balanced, as a clip-art catalogue with about 25 pictures per category would be.
OPENCLIPART_CATEGORIES = (
    "animals",
    "buildings",
    "electronics",
    "food",
    "geography",
    "office",
    "people",
    "plants",
    "recreation",
    "tools",
    "transportation",
)
OPENCLIPART_PER_CATEGORY = 25
# Drawings per category that the plain near-duplicate set copies, after the ones the clip-art set holds: 5 of each
# of 11 categories is about the 56 originals of the held-out near-duplicates.
CLIPART_NEAR_DUPLICATES = 5

# Real photographs for the near-duplicate set, besides scikit-image's: GCompris activities that the development set
# does not use.
NEAR_DUPLICATE_PHOTOS = (
    Selection("louis-braille", r"\w+\.webp"),
    Selection("explore_world_music", r"music/\w+\.webp"),
    Selection("leftright", r"\w+\.webp"),
)

# The fitting set for a shipped projection: GCompris pictures in none of the sets above.
FIT_SELECTIONS = (
    Selection("paintings", r"image/\w+\.webp"),
    Selection("details", r"image/\w+\.webp"),
    Selection("babymatch", r"images/\w+\.svg"),
    Selection("chronos", r"images/\w+\.(svg|webp)"),
    Selection("family", r"\w+\.svg"),
    Selection("traffic", r"\w+\.svg"),
    Selection("mosaic", r"\w+\.svg"),
    Selection("colors", r"\w+_duck\.svg"),
    Selection("submarine", r"\w+\.svg"),
    Selection("digital_electricity", r"\w+\.svg"),
    Selection("menu", r"\w+\.svg"),
    Selection("learn_digits", r"\w+\.svg"),
    Selection("memory-enumerate", r"\w+\.svg"),
    Selection("babyshapes", r"(dog\d|image)/\w+\.webp"),
)


def _rcc_files(rcc: str) -> Iterator[tuple[str, bytes]]:
    path = GCOMPRIS_RCC / f"{rcc}.rcc"
    if not path.is_file():
        raise MissingSource(f"{path} is missing; install the Debian package gcompris-qt-data (hack/tools/eval-data.sh)")
    for name, data in ResourceFile.open(path).files():
        yield name.split("/resource/", 1)[-1], data


def _selected(selections: Iterable[Selection]) -> Iterator[tuple[str, str, bytes]]:
    """(source rcc, path in it, bytes) of every file a selection names, in a stable order."""
    for selection in selections:
        pattern = re.compile(selection.pattern)
        for name, data in sorted(_rcc_files(selection.rcc)):
            if pattern.fullmatch(name):
                yield selection.rcc, name, data


def render_svg(data: bytes, side: int = SVG_SIDE) -> bytes:
    """An SVG drawing as a PNG that fits a `side` square, transparency kept (librsvg's rsvg-convert)."""
    if shutil.which("rsvg-convert") is None:
        raise MissingSource(
            "rsvg-convert is missing; install the Debian package librsvg2-bin (hack/tools/eval-data.sh)"
        )
    result = subprocess.run(
        ["rsvg-convert", "--width", str(side), "--height", str(side), "--keep-aspect-ratio", "--format", "png"],
        input=data,
        capture_output=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0 or not result.stdout:
        raise ValueError(f"rsvg-convert failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _as_image_file(name: str, data: bytes) -> tuple[str, bytes]:
    stem, suffix = name.rsplit(".", 1)
    if suffix == "svg":
        return f"{stem}.png", render_svg(data)
    return name, data


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        path.write_bytes(data)
    return path


def _flat(rcc: str, name: str) -> str:
    return f"{rcc}-{name.replace('/', '-')}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_gcompris_set(out_dir: Path, per_category: int | None = None) -> Path:
    """The development set: every category of GCOMPRIS_CATEGORIES, or its first `per_category` files."""
    root = out_dir / "gcompris"
    seen: set[str] = set()
    for category, selections in GCOMPRIS_CATEGORIES.items():
        written = 0
        for rcc, name, data in _selected(selections):
            if category == "digits" and _NOT_DIGITS.search(name):
                continue
            digest = _digest(data)
            if digest in seen:  # the same picture in two activities counts once
                continue
            seen.add(digest)
            _write(root / category, *_as_image_file(_flat(rcc, name), data))
            written += 1
            if per_category is not None and written >= per_category:
                break
    return root


def build_drawings_set(out_dir: Path) -> Path:
    """The development set's GCOMPRIS_DRAWINGS categories on their own, copied from a built development set."""
    root = out_dir / "drawings"
    for category in GCOMPRIS_DRAWINGS:
        for path in sorted((out_dir / "gcompris" / category).iterdir()):
            _write(root / category, path.name, path.read_bytes())
    return root


def _standing_picture(path: Path) -> bool:
    # "archer.png" and "mage+female.png" stand; "archer-bow-attack-1.png" is a frame of an animation.
    return "-" not in path.stem


def build_wesnoth_set(out_dir: Path, per_category: int | None = None) -> Path:
    """The cross-check set: each race's standing unit pictures (72x72 pixel art on transparency)."""
    if not WESNOTH_UNITS.is_dir():
        raise MissingSource(f"{WESNOTH_UNITS} is missing; install the Debian package wesnoth-1.16-data")
    root = out_dir / "wesnoth"
    seen: set[str] = set()
    for race, folders in WESNOTH_RACES.items():
        files = sorted(p for folder in folders for p in (WESNOTH_UNITS / folder).rglob("*.png") if _standing_picture(p))
        written = 0
        for path in files:
            data = path.read_bytes()
            digest = _digest(data)
            if digest in seen:
                continue
            seen.add(digest)
            relative = path.relative_to(WESNOTH_UNITS)
            _write(root / race, "-".join(relative.parts), data)
            written += 1
            if per_category is not None and written >= per_category:
                break
    return root


def _openclipart_files() -> dict[str, list[Path]]:
    if not OPENCLIPART_SVG.is_dir():
        raise MissingSource(f"{OPENCLIPART_SVG} is missing; install the Debian package openclipart-svg")
    files = {category: sorted((OPENCLIPART_SVG / category).rglob("*.svg")) for category in OPENCLIPART_CATEGORIES}
    # The library files some drawings under two folders; such a drawing has no single category, so it is left out.
    folders: dict[str, set[str]] = {}
    for category, paths in files.items():
        for path in paths:
            folders.setdefault(_digest(path.read_bytes()), set()).add(category)
    return {
        category: [path for path in paths if len(folders[_digest(path.read_bytes())]) == 1]
        for category, paths in files.items()
    }


def _clipart_order(seed: int) -> dict[str, list[Path]]:
    """Each category's drawings in a seeded order: the clip-art set takes the first ones, the plain near-duplicate
    set the next ones, so the two never share a drawing."""
    ordered = {}
    for category, paths in _openclipart_files().items():
        order = list(paths)
        random.Random(f"{seed}-{category}").shuffle(order)
        ordered[category] = order
    return ordered


def _clipart_name(category: str, path: Path) -> str:
    return "-".join(path.relative_to(OPENCLIPART_SVG / category).with_suffix(".png").parts)


def _write_drawing(folder: Path, name: str, svg: Path) -> Path | None:
    """The drawing as a PNG in `folder`, or None when rsvg-convert cannot draw it (such drawings are left out)."""
    if (folder / name).exists():
        return folder / name
    try:
        return _write(folder, name, render_svg(svg.read_bytes()))
    except (ValueError, subprocess.TimeoutExpired):
        return None


def build_clipart_set(out_dir: Path, per_category: int = OPENCLIPART_PER_CATEGORY, seed: int = 0) -> Path:
    """The clip-art set: the first `per_category` drawings of each OPENCLIPART_CATEGORIES folder in a seeded order."""
    root = out_dir / "clipart"
    for category, order in _clipart_order(seed).items():
        for path in order[:per_category]:
            _write_drawing(root / category, _clipart_name(category, path), path)
    return root


def plain_near_duplicate(data: bytes, rng: random.Random) -> bytes:
    """A copy as the issue's held-out set makes them: cropped 4% per side, resized to 50-90%, JPEG quality 70.
    A transparent drawing is flattened onto the decoder's white first, as it looks wherever it is shown and copied
    from."""
    image = to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    width, height = image.size
    image = image.crop((round(width * 0.04), round(height * 0.04), round(width * 0.96), round(height * 0.96)))
    scale = rng.uniform(0.5, 0.9)
    image = image.resize((max(round(image.width * scale), 32), max(round(image.height * scale), 32)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=70)
    return out.getvalue()


def _photos() -> Iterator[tuple[str, bytes]]:
    from predictor.imaging.sample_catalogue import PHOTOS, photo, stereo_pair

    def jpeg(pixels) -> bytes:
        out = io.BytesIO()
        Image.fromarray(pixels).convert("RGB").save(out, format="JPEG", quality=95)
        return out.getvalue()

    for name in PHOTOS:
        yield f"skimage-{name}.jpg", jpeg(photo(name))
    left, right = stereo_pair()
    yield "skimage-motorcycle_left.jpg", jpeg(left)
    yield "skimage-motorcycle_right.jpg", jpeg(right)
    for rcc, name, data in _selected(NEAR_DUPLICATE_PHOTOS):
        yield _flat(rcc, name), data


def build_near_duplicates(out_dir: Path, copies: int = 2, seed: int = 0, limit: int | None = None) -> Path:
    """`originals/` real photographs and `copies/<original stem>--<n>.jpg`, `copies` edited copies of each."""
    root = out_dir / "near-duplicates"
    rng = random.Random(seed)
    for number, (name, data) in enumerate(_photos()):
        if limit is not None and number >= limit:
            break
        _write(root / "originals", name, data)
        stem = name.rsplit(".", 1)[0]
        for copy in range(copies):
            edited = near_duplicate(data, rng)  # drawn in order either way, so a copy never depends on what exists
            _write(root / "copies", f"{stem}--{copy}.jpg", edited)
    return root


def build_plain_near_duplicates(
    out_dir: Path, drawings_per_category: int = CLIPART_NEAR_DUPLICATES, seed: int = 0
) -> Path:
    """Near-duplicates made the way the issue's held-out set made them (`plain_near_duplicate`), one copy each, of
    the near-duplicate set's photographs and of clip-art drawings that the clip-art set does not hold."""
    root = out_dir / "near-duplicates-plain"
    rng = random.Random(seed)
    originals: list[tuple[str, bytes]] = list(_photos())
    for category, order in _clipart_order(seed).items():
        for path in order[OPENCLIPART_PER_CATEGORY : OPENCLIPART_PER_CATEGORY + drawings_per_category]:
            written = _write_drawing(root / "originals", f"clipart-{category}-{_clipart_name(category, path)}", path)
            if written is not None:
                originals.append((written.name, written.read_bytes()))
    for name, data in originals:
        _write(root / "originals", name, data)
        edited = plain_near_duplicate(data, rng)
        _write(root / "copies", f"{name.rsplit('.', 1)[0]}--0.jpg", edited)
    return root


def build_fit_set(out_dir: Path) -> Path:
    """Pictures for fitting a shipped projection: GCompris files in none of the evaluation sets, by content."""
    root = out_dir / "fit"
    excluded = {_digest(data) for _, _, data in _selected(s for group in GCOMPRIS_CATEGORIES.values() for s in group)}
    excluded |= {_digest(data) for _, _, data in _selected(NEAR_DUPLICATE_PHOTOS)}
    seen: set[str] = set()
    for rcc, name, data in _selected(FIT_SELECTIONS):
        digest = _digest(data)
        if digest in excluded or digest in seen:
            continue
        seen.add(digest)
        _write(root / rcc, *_as_image_file(_flat(rcc, name), data))
    return root


def build_all(out_dir: Path) -> dict[str, Path]:
    return {
        "development": build_gcompris_set(out_dir),
        "drawings": build_drawings_set(out_dir),
        "cross-check": build_wesnoth_set(out_dir),
        "near-duplicates": build_near_duplicates(out_dir),
        "clip-art": build_clipart_set(out_dir),
        "plain near-duplicates": build_plain_near_duplicates(out_dir),
        "fit": build_fit_set(out_dir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.eval_sets", description="Build the evaluation sets from installed Debian data packages."
    )
    parser.add_argument("--out", default="data/eval", help="Directory to build them in.")
    args = parser.parse_args(argv)
    try:
        built = build_all(Path(args.out))
    except MissingSource as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
