"""What a model is: identity, architecture, preprocessing, pooling, projection and weights, from a package directory
or the bundled default.

A model package is a directory holding `model.json`, a safetensors weights file and, when it was fitted to a
catalogue, a safetensors projection; `model.json` records the SHA-256 of both. The identity (name, version,
dimension) decides which Milvus collection the model may read and write, so everything that changes what a vector
means (weights, preprocessing, pooling, projection) belongs to one version.
"""

import hashlib
import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from predictor.embedding.architectures import UnknownArchitecture, architecture
from predictor.identity import ModelIdentity
from predictor.imaging.decoding import PREPROCESSING_MODES, RGB, Preprocessing

if TYPE_CHECKING:
    import torch

    from predictor.embedding.architectures.pooling import PooledNetwork
    from predictor.embedding.clip_package import ClipFiles
    from predictor.embedding.projection import Projection

MANIFEST_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLING_KINDS = ("average", "gem")
# Numeric precisions a package may allow its network to run at (model.json "precisions"). Without the field the float
# formats are allowed, whose load-time probe shows that retrieval is unchanged; int8 must be listed, once the release
# passed the evaluation gate at int8.
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DEFAULT_PRECISIONS = ("fp32", "bf16", "fp16")


class InvalidModelPackage(ValueError):
    """The model package cannot be served; the message says what to fix."""


@dataclass(frozen=True)
class Pooling:
    kind: str = "average"
    p: float = 3.0  # GeM's exponent; ignored by average pooling

    def __post_init__(self) -> None:
        if self.kind not in POOLING_KINDS:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_KINDS)}, got {self.kind!r}")
        if self.kind == "gem" and not 1.0 <= self.p <= 16.0:
            raise ValueError(f"GeM pooling needs 1 <= p <= 16, got {self.p}")

    def to_json(self) -> dict:
        return {"kind": self.kind, "p": self.p} if self.kind == "gem" else {"kind": self.kind}


@dataclass(frozen=True)
class ProjectionFile:
    """A fitted projection that belongs to the package, and what it was fitted on (for the record)."""

    path: Path
    sha256: str
    kind: str
    input_dim: int
    output_dim: int
    fitted_on: dict = field(default_factory=dict)
    whitening_power: float = 0.0

    def load(self) -> "Projection":
        from predictor.embedding.projection import load_projection

        projection = load_projection(self.path)
        if (projection.input_dimension, projection.output_dimension) != (self.input_dim, self.output_dim):
            raise InvalidModelPackage(
                f"{self.path}: projection maps {projection.input_dimension} -> {projection.output_dimension} "
                f"dimensions but {MANIFEST_NAME} says {self.input_dim} -> {self.output_dim}"
            )
        return projection

    def to_json(self) -> dict:
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "kind": self.kind,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "whitening_power": self.whitening_power,
            "fitted_on": self.fitted_on,
        }


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    architecture: str
    dimension: int  # of the served vectors: the projection's output when there is one
    weights_path: Path
    weights_sha256: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pooling: Pooling = field(default_factory=Pooling)
    projection: ProjectionFile | None = None
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    clip: "ClipFiles | None" = None  # an open_clip package (clip_package.py): it also embeds text

    @property
    def has_text_tower(self) -> bool:
        return self.clip is not None

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.version, self.dimension)

    @property
    def feature_dimension(self) -> int:
        """What the network's pooled features have, before any projection."""
        if self.clip is not None:
            return self.clip.embed_dim
        return architecture(self.architecture).dimension

    def describe(self) -> dict:
        """The fields that decide what a vector means, for reports and experiment tracking."""
        return {
            "identity": str(self.identity),
            "architecture": self.architecture,
            "preprocessing": self.preprocessing.to_json(),
            "pooling": self.pooling.to_json(),
            "projection": None if self.projection is None else self.projection.to_json(),
            **({"open_clip": self.clip.describe()} if self.clip is not None else {}),
        }


def imagenet_crop(input_size: int) -> Preprocessing:
    """ImageNet's evaluation crop at any input size: the shorter side to 256/224 of it, then the centre square."""
    return Preprocessing(mode="center-crop", input_size=input_size, resize_shorter_side=round(input_size * 256 / 224))


def bundled_spec(
    architecture_name: str,
    *,
    name: str | None = None,
    version: str = "imagenet-1",
    preprocessing: Preprocessing | None = None,
    pooling: Pooling | None = None,
) -> ModelSpec:
    """A model whose weights ship inside an installed Python package, at its native input size by default."""
    known = architecture(architecture_name)
    if known.bundled_weights is None:
        raise InvalidModelPackage(f"{architecture_name} has no bundled weights; give a model package (--model-dir)")
    return ModelSpec(
        name=name or architecture_name,
        version=version,
        architecture=architecture_name,
        dimension=known.dimension,
        weights_path=known.bundled_weights(),
        preprocessing=preprocessing or imagenet_crop(known.input_size),
        pooling=pooling or Pooling(),
    )


def legacy_spec() -> ModelSpec:
    """The model served before 0.2: EfficientNet-Lite0, ImageNet centre crop, average pooling."""
    return bundled_spec("efficientnet-lite0", version="imagenet-1", preprocessing=Preprocessing())


# The default's projection ships in the Python package; `make default-projection` fits it again from the Debian
# package's pictures (data/eval/fit) and must give a file with the same SHA-256.
DEFAULTS_DIR = Path(__file__).parent / "defaults"
DEFAULT_PROJECTION_RECORD = DEFAULTS_DIR / "projection.json"


def default_base_spec() -> ModelSpec:
    """The default model before its projection: what `make default-projection` fits the projection for."""
    return bundled_spec(
        "efficientnet-lite0",
        version="letterbox288-gem-1",
        preprocessing=Preprocessing(mode="letterbox", input_size=288),
        pooling=Pooling("gem", 3.0),
    )


def default_spec() -> ModelSpec:
    """The bundled default, chosen by `make eval` (docs/evaluation.md): the base plus its shipped projection."""
    base = default_base_spec()
    if not DEFAULT_PROJECTION_RECORD.is_file():
        return base
    record = json.loads(DEFAULT_PROJECTION_RECORD.read_text())
    version = record.pop("version")
    projection = ProjectionFile(**{**record, "path": DEFAULTS_DIR / record["path"]})
    return replace(base, version=version, dimension=projection.output_dim, projection=projection)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(manifest: dict, key: str, kind: type, path: Path) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or value in ("", None):
        raise InvalidModelPackage(f"{path}: field {key!r} must be a non-empty {kind.__name__}, got {value!r}")
    return value


def _checked_file(directory: Path, name: str, expected_sha: str, what: str) -> Path:
    path = directory / name
    if path.parent != directory or not path.is_file():
        raise InvalidModelPackage(f"{directory}: {what} file {name} is missing")
    actual_sha = file_sha256(path)
    if actual_sha != expected_sha:
        raise InvalidModelPackage(
            f"{path}: SHA-256 is {actual_sha} but {MANIFEST_NAME} says {expected_sha}; "
            f"the {what} are corrupt or do not belong to this package"
        )
    return path


def _unstored_shorter_side(mode: str, side: int) -> int:
    # Only a centre crop stores its resize; any other mode never reads it, and loads with the value it was built with
    # (Preprocessing's own), so that a package reads back equal to the spec it was written from.
    return imagenet_crop(side).resize_shorter_side if mode == "center-crop" else Preprocessing.resize_shorter_side


def _preprocessing(manifest: dict, path: Path, input_size: int) -> tuple[Preprocessing, tuple, tuple]:
    section = manifest.get("preprocessing", {})
    if not isinstance(section, dict):
        raise InvalidModelPackage(f"{path}: 'preprocessing' must be an object")
    mode = section.get("mode", "center-crop")
    if mode not in PREPROCESSING_MODES:
        raise InvalidModelPackage(f"{path}: preprocessing mode must be one of {', '.join(PREPROCESSING_MODES)}")
    try:
        # Packages written before letterboxing existed call the input side crop_size.
        side = int(section["input_size"] if "input_size" in section else section.get("crop_size", input_size))
        geometry = Preprocessing(
            mode=mode,
            input_size=side,
            resize_shorter_side=int(section.get("resize_shorter_side", _unstored_shorter_side(mode, side))),
            # Preprocessing refuses a colour that is not three channels.
            pad_color=cast(RGB, tuple(int(v) for v in section.get("pad_color", (255, 255, 255)))),
            background=cast(RGB, tuple(int(v) for v in section.get("background", (255, 255, 255)))),
        )
        mean = tuple(float(v) for v in section.get("mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in section.get("std", IMAGENET_STD))
    except (TypeError, ValueError) as error:
        raise InvalidModelPackage(f"{path}: invalid preprocessing: {error}") from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise InvalidModelPackage(f"{path}: preprocessing mean/std need 3 values each, std > 0")
    return geometry, mean, std


def _pooling(manifest: dict, path: Path) -> Pooling:
    section = manifest.get("pooling", {"kind": "average"})
    if not isinstance(section, dict):
        raise InvalidModelPackage(f'{path}: \'pooling\' must be an object such as {{"kind": "gem", "p": 3}}')
    try:
        return Pooling(kind=section.get("kind", "average"), p=float(section.get("p", 3.0)))
    except (TypeError, ValueError) as error:
        raise InvalidModelPackage(f"{path}: invalid pooling: {error}") from None


def _precisions(manifest: dict, path: Path) -> tuple[str, ...]:
    precisions = manifest.get("precisions", list(DEFAULT_PRECISIONS))
    if (
        not isinstance(precisions, list)
        or "fp32" not in precisions
        or not all(isinstance(name, str) and name in PRECISIONS for name in precisions)
    ):
        raise InvalidModelPackage(
            f"{path}: 'precisions' must be a list of {', '.join(PRECISIONS)} that holds fp32, got {precisions!r}"
        )
    return tuple(precisions)


def _projection(manifest: dict, directory: Path, path: Path, feature_dimension: int) -> ProjectionFile | None:
    section = manifest.get("projection")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise InvalidModelPackage(f"{path}: 'projection' must be an object")
    sha = _require(section, "sha256", str, path)
    file = _checked_file(directory, _require(section, "file", str, path), sha, "projection")
    input_dim, output_dim = section.get("input_dim"), section.get("output_dim")
    if input_dim != feature_dimension or not isinstance(output_dim, int) or not 0 < output_dim <= input_dim:
        raise InvalidModelPackage(
            f"{path}: projection must map the architecture's {feature_dimension} dimensions to 1..{feature_dimension}; "
            f"got input_dim {input_dim!r}, output_dim {output_dim!r}"
        )
    fitted_on = section.get("fitted_on", {})
    return ProjectionFile(
        path=file,
        sha256=sha,
        kind=str(section.get("kind", "pca" if output_dim != input_dim else "centre")),
        input_dim=input_dim,
        output_dim=output_dim,
        fitted_on=fitted_on if isinstance(fitted_on, dict) else {},
        whitening_power=float(section.get("whitening_power", 0.0)),
    )


def load_package(directory: Path) -> ModelSpec:
    """Read and check a model package; refuse it with a message that says what is wrong."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InvalidModelPackage(f"{directory} is not a model package: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise InvalidModelPackage(f"{manifest_path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise InvalidModelPackage(f"{manifest_path} must hold a JSON object")
    from predictor.embedding.clip_package import OPEN_CLIP

    if manifest.get("architecture") == OPEN_CLIP:
        return _load_clip_package(manifest, directory, manifest_path)
    try:
        known = architecture(_require(manifest, "architecture", str, manifest_path))
    except UnknownArchitecture as error:
        raise InvalidModelPackage(f"{manifest_path}: {error}") from None
    projection = _projection(manifest, directory, manifest_path, known.dimension)
    dimension = _require(manifest, "embedding_dim", int, manifest_path)
    expected = projection.output_dim if projection else known.dimension
    if dimension != expected:
        because = "its projection's output_dim" if projection else known.name
        raise InvalidModelPackage(f"{manifest_path}: embedding_dim {dimension} does not match {because} ({expected})")
    weights_sha = _require(manifest, "weights_sha256", str, manifest_path)
    weights_path = _checked_file(directory, manifest.get("weights", WEIGHTS_NAME), weights_sha, "weights")
    preprocessing, mean, std = _preprocessing(manifest, manifest_path, known.input_size)
    return ModelSpec(
        name=_require(manifest, "name", str, manifest_path),
        version=_require(manifest, "version", str, manifest_path),
        architecture=known.name,
        dimension=dimension,
        weights_path=weights_path,
        weights_sha256=weights_sha,
        preprocessing=preprocessing,
        mean=mean,
        std=std,
        pooling=_pooling(manifest, manifest_path),
        projection=projection,
        precisions=_precisions(manifest, manifest_path),
    )


def _load_clip_package(manifest: dict, directory: Path, manifest_path: Path) -> ModelSpec:
    from predictor.embedding.clip_package import read_clip_section

    if manifest.get("projection") is not None:
        raise InvalidModelPackage(
            f"{manifest_path}: an open_clip package takes no projection: it would move image vectors away from the "
            "text vectors they are compared with"
        )
    clip = read_clip_section(manifest, directory, manifest_path)
    dimension = _require(manifest, "embedding_dim", int, manifest_path)
    if dimension != clip.embed_dim:
        raise InvalidModelPackage(f"{manifest_path}: embedding_dim {dimension} is not open_clip's {clip.embed_dim}")
    weights_sha = _require(manifest, "weights_sha256", str, manifest_path)
    weights_path = _checked_file(directory, _require(manifest, "weights", str, manifest_path), weights_sha, "weights")
    preprocessing, mean, std = _preprocessing(manifest, manifest_path, 224)
    return ModelSpec(
        name=_require(manifest, "name", str, manifest_path),
        version=_require(manifest, "version", str, manifest_path),
        architecture=manifest["architecture"],
        dimension=dimension,
        weights_path=weights_path,
        weights_sha256=weights_sha,
        preprocessing=preprocessing,
        mean=mean,
        std=std,
        precisions=_precisions(manifest, manifest_path),
        clip=clip,
    )


def package_files(spec: ModelSpec) -> tuple[Path, ...]:
    """Every file of a package that `load_package` read: model.json first, then each file it references (the weights,
    the projection when there is one). Whatever copies or uploads a package takes the list from here, so a new kind
    of file in model.json is never left behind."""
    directory = spec.weights_path.parent
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        raise InvalidModelPackage(
            f"{spec.identity} is not a package on disk: {directory} has no {MANIFEST_NAME} (export-model writes one)"
        )
    referenced = [spec.weights_path]
    if spec.projection is not None:
        referenced.append(spec.projection.path)
    if spec.clip is not None:
        referenced.extend(spec.clip.paths)
    # load_package refuses a referenced file outside the package directory, so every file sits next to model.json.
    return (manifest, *referenced)


def load_state_dict(path: Path) -> dict[str, "torch.Tensor"]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def build_network(spec: ModelSpec) -> "PooledNetwork":
    """Instantiate the architecture with the package's pooling and load its weights exactly: a missing or extra
    tensor is an error."""
    from predictor.embedding.architectures.pooling import make_pooling

    network = architecture(spec.architecture).build(make_pooling(spec.pooling.kind, spec.pooling.p))
    try:
        network.load_state_dict(load_state_dict(spec.weights_path), strict=True)
    except RuntimeError as error:
        raise InvalidModelPackage(f"{spec.weights_path} does not fit {spec.architecture}: {error}") from None
    return network


def manifest_of(spec: ModelSpec, weights_sha256: str) -> dict:
    """model.json as the loader understands `spec`: every field explicit, defaults included, files by name."""
    manifest = {
        "name": spec.name,
        "version": spec.version,
        "architecture": spec.architecture,
        "embedding_dim": spec.dimension,
        "weights": spec.weights_path.name,
        "weights_sha256": weights_sha256,
        "preprocessing": {**spec.preprocessing.to_json(), "mean": list(spec.mean), "std": list(spec.std)},
        "pooling": spec.pooling.to_json(),
        "precisions": list(spec.precisions),
    }
    if spec.projection is not None:
        manifest["projection"] = spec.projection.to_json()
    if spec.clip is not None:
        manifest.pop("pooling")
        manifest["open_clip"] = spec.clip.to_json()
    return manifest


def export_package(spec: ModelSpec, out_dir: Path) -> Path:
    """Write `spec`'s weights as safetensors (and its projection, if any) plus a manifest that pins their hashes."""
    from safetensors.torch import save_file

    if spec.clip is not None:
        return _copy_clip_package(spec, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / WEIGHTS_NAME
    if spec.weights_path.suffix == ".safetensors":
        if spec.weights_path.resolve() != weights_path.resolve():
            shutil.copyfile(spec.weights_path, weights_path)
    else:
        state = {key: tensor.contiguous() for key, tensor in load_state_dict(spec.weights_path).items()}
        save_file(state, str(weights_path))
    if spec.projection is not None:
        target = out_dir / spec.projection.path.name
        if spec.projection.path.resolve() != target.resolve():
            shutil.copyfile(spec.projection.path, target)
        spec = replace(spec, projection=replace(spec.projection, path=target))
    manifest = manifest_of(replace(spec, weights_path=weights_path), file_sha256(weights_path))
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def _copy_clip_package(spec: ModelSpec, out_dir: Path) -> Path:
    source = spec.weights_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in package_files(spec):
        target = out_dir / path.relative_to(source)
        if path.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return out_dir


def resolve_spec(model_dir: str | None) -> ModelSpec:
    """A package directory when given (KServe mounts storageUri there), else the bundled default."""
    if not model_dir:
        return default_spec()
    directory = Path(model_dir)
    if not directory.is_dir():
        raise InvalidModelPackage(f"--model-dir {model_dir} does not exist or is not a directory")
    return load_package(directory)
