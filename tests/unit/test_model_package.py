import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from predictor.backbone import Backbone
from predictor.model_package import (
    InvalidModelPackage,
    build_network,
    default_spec,
    export_package,
    file_sha256,
    load_package,
    resolve_spec,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_package(default_spec(), tmp_path_factory.mktemp("package"))


def test_exported_package_loads_with_the_default_identity(exported):
    spec = load_package(exported)
    assert spec.identity == default_spec().identity
    assert spec.weights_sha256 == file_sha256(spec.weights_path)


def test_exported_weights_give_the_same_network_as_the_bundled_ones(exported):
    bundled, packaged = build_network(default_spec()), build_network(load_package(exported))
    for key, tensor in bundled.state_dict().items():
        assert torch.equal(tensor, packaged.state_dict()[key]), key


def copy_package(source, destination):
    destination.mkdir()
    for path in source.iterdir():
        (destination / path.name).write_bytes(path.read_bytes())
    return destination


def test_weights_that_do_not_match_their_hash_are_refused(exported, tmp_path):
    package = copy_package(exported, tmp_path / "tampered")
    weights = package / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(InvalidModelPackage, match="SHA-256 is .* but model.json says"):
        load_package(package)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architecture": "vgg99"}, "unknown architecture 'vgg99'"),
        ({"embedding_dim": 512}, "does not match efficientnet-lite0"),
        ({"version": ""}, "field 'version' must be a non-empty str"),
        ({"preprocessing": {"crop_size": 300, "resize_shorter_side": 256}}, "must be >= input_size"),
    ],
)
def test_invalid_manifests_are_refused_with_what_to_fix(exported, tmp_path, change, message):
    package = copy_package(exported, tmp_path / "bad")
    manifest = json.loads((package / "model.json").read_text())
    (package / "model.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises((InvalidModelPackage, ValueError), match=message):
        load_package(package)


def test_manifest_that_is_not_json_is_refused(exported, tmp_path):
    package = copy_package(exported, tmp_path / "garbled")
    (package / "model.json").write_text("{not json")
    with pytest.raises(InvalidModelPackage, match="not valid JSON"):
        load_package(package)


def test_missing_model_dir_is_refused():
    with pytest.raises(InvalidModelPackage, match="does not exist"):
        resolve_spec("/nonexistent/model")


def test_a_torchvision_resnet_package_loads_and_embeds(tmp_path):
    package = tmp_path / "resnet18"
    package.mkdir()
    save_file(torchvision.models.resnet18(weights=None).state_dict(), str(package / "weights.safetensors"))
    (package / "model.json").write_text(
        json.dumps(
            {
                "name": "resnet18-products",
                "version": "2",
                "architecture": "resnet18",
                "embedding_dim": 512,
                "weights_sha256": file_sha256(package / "weights.safetensors"),
            }
        )
    )
    backbone = Backbone(load_package(package), device="cpu")
    backbone.load()
    assert backbone.run(torch.zeros(2, 224, 224, 3, dtype=torch.uint8).numpy()).embeddings.shape == (2, 512)
