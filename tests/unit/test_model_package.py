import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from predictor.embedding.backbone import Backbone
from predictor.embedding.model_package import (
    InvalidModelPackage,
    build_network,
    default_spec,
    export_package,
    file_sha256,
    legacy_spec,
    load_package,
    manifest_of,
    package_files,
    resolve_spec,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_package(default_spec(), tmp_path_factory.mktemp("package"))


def test_exported_package_loads_with_the_default_identity(exported):
    spec = load_package(exported)
    assert spec.identity == default_spec().identity
    assert (spec.preprocessing, spec.pooling) == (default_spec().preprocessing, default_spec().pooling)
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
        ({"embedding_dim": 512}, "embedding_dim 512 does not match"),
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


def test_a_legacy_package_without_a_mode_is_read_as_the_imagenet_centre_crop(exported, tmp_path):
    package = copy_package(exported, tmp_path / "legacy")
    manifest = json.loads((package / "model.json").read_text())
    manifest["preprocessing"] = {"resize_shorter_side": 256, "crop_size": 224}
    manifest.pop("pooling")
    (package / "model.json").write_text(json.dumps(manifest))
    spec = load_package(package)
    assert (spec.preprocessing.mode, spec.preprocessing.input_size, spec.pooling.kind) == (
        "center-crop",
        224,
        "average",
    )


@pytest.fixture(scope="module")
def projected(tmp_path_factory):
    import numpy as np

    from predictor.embedding.model_package import Pooling, bundled_spec
    from predictor.embedding.projection import fit_projection
    from predictor.embedding.projection_fitting import write_projected_package
    from predictor.imaging.decoding import Preprocessing

    spec = bundled_spec(
        "efficientnet-lite0", preprocessing=Preprocessing("letterbox", 224), pooling=Pooling("gem", 3.0)
    )
    features = np.random.default_rng(0).normal(size=(40, 1280))
    fitted = {"source": "random features", "images": 40}
    return write_projected_package(spec, fit_projection(features, 16), tmp_path_factory.mktemp("projected"), fitted)


def test_a_package_with_a_projection_is_a_new_version_with_its_own_dimension(projected):
    assert projected.version.startswith("imagenet-1-pca16-") and projected.dimension == 16
    manifest = json.loads((projected.weights_path.parent / "model.json").read_text())
    assert manifest["embedding_dim"] == 16 and manifest["pooling"] == {"kind": "gem", "p": 3.0}
    assert manifest["preprocessing"]["mode"] == "letterbox" and manifest["projection"]["output_dim"] == 16
    assert manifest["projection"]["fitted_on"] == {"source": "random features", "images": 40}
    backbone = Backbone(projected, device="cpu")
    backbone.load()
    embeddings = backbone.run(torch.zeros(2, 224, 224, 3, dtype=torch.uint8).numpy()).embeddings
    assert embeddings.shape == (2, 16)


def test_the_served_vectors_are_the_raw_features_projected_exactly_as_fitted(projected):
    from dataclasses import replace

    import numpy as np

    pixels = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    raw = Backbone(replace(projected, projection=None, dimension=1280), device="cpu")
    served = Backbone(projected, device="cpu")
    raw.load(), served.load()
    expected = projected.projection.load().apply(raw.run(pixels).embeddings)
    np.testing.assert_allclose(served.run(pixels).embeddings, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["projection"].update(sha256="0" * 64), "the projection are corrupt"),
        (lambda m: m.update(embedding_dim=1280), "does not match its projection's output_dim"),
        (lambda m: m["projection"].update(input_dim=512), "projection must map the architecture's 1280"),
        (lambda m: m.update(pooling={"kind": "max"}), "pooling must be one of"),
    ],
)
def test_a_projection_that_does_not_fit_its_package_is_refused(projected, tmp_path, change, message):
    package = copy_package(projected.weights_path.parent, tmp_path / "bad")
    manifest = json.loads((package / "model.json").read_text())
    change(manifest)
    (package / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidModelPackage, match=message):
        load_package(package)


def test_a_package_consists_of_model_json_and_every_file_it_references(exported, projected, tmp_path):
    files = package_files(load_package(exported))
    assert files[0] == exported / "model.json"
    assert sorted(path.name for path in files) == sorted(path.name for path in exported.iterdir())
    assert "projection.safetensors" in {path.name for path in files}
    fitted = projected.weights_path.parent
    assert {path.name for path in package_files(load_package(fitted))} == {path.name for path in fitted.iterdir()}
    plain = export_package(legacy_spec(), tmp_path / "plain")
    assert [path.name for path in package_files(load_package(plain))] == ["model.json", "weights.safetensors"]
    with pytest.raises(InvalidModelPackage, match="is not a package on disk"):
        package_files(default_spec())


def test_the_loaders_manifest_is_model_json_with_every_default_explicit(exported, tmp_path):
    spec = load_package(exported)
    assert manifest_of(spec, spec.weights_sha256) == json.loads((exported / "model.json").read_text())
    package = copy_package(exported, tmp_path / "legacy")
    manifest = json.loads((package / "model.json").read_text())
    manifest["preprocessing"] = {"resize_shorter_side": 256, "crop_size": 224}
    (package / "model.json").write_text(json.dumps(manifest))
    legacy = load_package(package)
    assert manifest_of(legacy, legacy.weights_sha256)["preprocessing"]["mode"] == "center-crop"
