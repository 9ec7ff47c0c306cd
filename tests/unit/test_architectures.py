import pytest
import torch

from predictor.embedding.architectures import ARCHITECTURES, UnknownArchitecture, architecture, label_names
from predictor.embedding.architectures.pooling import AveragePool, GeMPool, make_pooling
from predictor.embedding.model_package import Pooling, build_network, bundled_spec


def test_an_unknown_architecture_is_refused_instead_of_falling_through_to_another_network():
    with pytest.raises(UnknownArchitecture, match="unknown architecture 'resnet-ish'; known: efficientnet-lite0"):
        architecture("resnet-ish")


@pytest.mark.parametrize("name", [name for name, a in ARCHITECTURES.items() if a.bundled_weights])
def test_bundled_weights_load_exactly_and_give_the_declared_dimension_at_the_native_size(name):
    declared = architecture(name)
    network = build_network(bundled_spec(name)).eval()
    with torch.inference_mode():
        features, logits = network.embed(torch.zeros(1, 3, declared.input_size, declared.input_size), True)
    assert features.shape == (1, declared.dimension)
    assert logits.shape == (1, len(label_names(declared.labels)))


def test_every_architecture_declares_its_contract():
    for name, declared in ARCHITECTURES.items():
        assert declared.name == name and declared.dimension > 0 and declared.input_size >= 224
        assert len(label_names(declared.labels)) == 1000


def test_gem_with_p_1_is_the_average_and_grows_towards_the_maximum():
    feature_map = torch.rand(2, 8, 5, 5)
    torch.testing.assert_close(GeMPool(1.0)(feature_map), AveragePool()(feature_map), rtol=1e-5, atol=1e-5)
    pooled = GeMPool(8.0)(feature_map)
    assert (pooled > AveragePool()(feature_map)).all() and (pooled <= feature_map.amax((2, 3)) + 1e-6).all()
    with pytest.raises(ValueError, match="pooling must be one of"):
        make_pooling("max")


def test_the_classifier_sees_average_pooled_features_whatever_the_embedding_pooling():
    x = torch.rand(2, 3, 224, 224)
    average = build_network(bundled_spec("efficientnet-lite0")).eval()
    gem = build_network(bundled_spec("efficientnet-lite0", pooling=Pooling("gem", 3.0))).eval()
    with torch.inference_mode():
        average_features, average_logits = average.embed(x, True)
        gem_features, gem_logits = gem.embed(x, True)
    torch.testing.assert_close(gem_logits, average_logits)
    assert not torch.allclose(gem_features, average_features)
