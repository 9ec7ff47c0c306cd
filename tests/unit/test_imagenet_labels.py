"""The classifier's ImageNet-1k class names, kept in the package so that a starting server need not import
torchvision, are torchvision's, in the same order."""

from torchvision.models import EfficientNet_B0_Weights

from predictor.embedding.architectures import IMAGENET_1K, label_names
from predictor.models.image_classifier import IMAGENET_LABELS


def test_the_packaged_labels_are_torchvisions_in_output_order():
    expected = list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])
    assert label_names(IMAGENET_1K) == expected
    assert IMAGENET_LABELS == expected and len(expected) == 1000
