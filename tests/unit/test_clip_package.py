"""CLIP model packages made with `image-search export-model --open-clip` from a tiny open_clip model with random
weights: what the package holds, what it refuses, and both towers on the Backbone against open_clip's own results."""

import json
import shutil

import numpy as np
import pytest
import torch

from harness.clip_models import TINY_CONFIG, make_package, open_clip_model, random_checkpoint, write_config
from harness.predictor_server import run_cli
from predictor.embedding import precision
from predictor.embedding.backbone import Backbone
from predictor.embedding.clip_package import CLIP_WEIGHTS_NAME, CONFIG_NAME
from predictor.embedding.clip_towers import PROBE_TEXTS
from predictor.embedding.compilation import missing_compiler
from predictor.embedding.model_package import InvalidModelPackage, load_package, package_files


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def backbone(package):
    loaded = Backbone(load_package(package), "cpu", "fp32", compile_mode="off")
    loaded.load()
    return loaded


def test_the_cli_writes_a_package_that_holds_config_weights_preprocessing_and_tokenizer(tmp_path):
    config = write_config(tmp_path)
    checkpoint = random_checkpoint(config, tmp_path / "checkpoint.pt")
    out = tmp_path / "package"
    result = run_cli("export-model", "--open-clip", str(config), "--weights", str(checkpoint), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "tiny-clip:1" in result.stdout
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["architecture"] == "open_clip" and manifest["embedding_dim"] == TINY_CONFIG["embed_dim"]
    assert manifest["preprocessing"]["input_size"] == 64 and manifest["preprocessing"]["mode"] == "center-crop"
    assert manifest["preprocessing"]["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert manifest["open_clip"]["tokenizer"]["kind"] == "open_clip-bpe"
    spec = load_package(out)
    assert sorted(path.name for path in package_files(spec)) == sorted(
        ["model.json", CLIP_WEIGHTS_NAME, CONFIG_NAME, "bpe_simple_vocab_16e6.txt.gz"]
    )
    assert spec.has_text_tower and str(spec.identity) == "tiny-clip:1 (64-d)"


def test_open_clip_itself_loads_the_package_folder_with_the_same_weights(package, tmp_path):
    checkpoint = torch.load(package.parent / "checkpoint.pt", weights_only=True)
    model, _, _ = open_clip_model(package)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint[key]), key


def test_a_changed_file_fails_the_hash_check(package, tmp_path):
    for name in (CLIP_WEIGHTS_NAME, CONFIG_NAME, "bpe_simple_vocab_16e6.txt.gz"):
        copy = tmp_path / name.replace(".", "-")
        shutil.copytree(package, copy)
        with (copy / name).open("ab") as changed:
            changed.write(b"\0")
        with pytest.raises(InvalidModelPackage, match="SHA-256"):
            load_package(copy)


def test_a_model_with_a_hub_tokenizer_is_refused_unless_its_files_are_given(tmp_path):
    config = {**TINY_CONFIG, "text_cfg": {**TINY_CONFIG["text_cfg"], "hf_tokenizer_name": "some/tokenizer"}}
    config_path = write_config(tmp_path, config, "hub-tokenizer")
    checkpoint = random_checkpoint(write_config(tmp_path), tmp_path / "checkpoint.pt")
    args = ["export-model", "--open-clip", str(config_path), "--weights", str(checkpoint)]
    refused = run_cli(*args, "--out", str(tmp_path / "out"))
    assert refused.returncode == 2
    assert "Hugging Face tokenizer 'some/tokenizer'" in refused.stderr and "--tokenizer DIR" in refused.stderr
    assert "Traceback" not in refused.stderr
    tokenizer = tmp_path / "tokenizer-files"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}")
    given = run_cli(*args, "--tokenizer", str(tokenizer), "--out", str(tmp_path / "with-files"))
    assert given.returncode == 0, given.stderr
    manifest = json.loads((tmp_path / "with-files" / "model.json").read_text())
    assert manifest["open_clip"]["tokenizer"]["kind"] == "huggingface"
    assert [entry["file"] for entry in manifest["open_clip"]["tokenizer"]["files"]] == ["tokenizer/tokenizer.json"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--open-clip", "No-Such-Model", "--weights", "{a file}"], "neither an open_clip model name"),
        (["--open-clip", "ViT-B-32"], "--open-clip needs --weights"),
        (["--weights", "x.pt"], "--weights goes with --open-clip"),
        (["--open-clip", "ViT-B-32", "--weights", "missing.pt"], "--weights missing.pt is not a file"),
    ],
)
def test_export_mistakes_are_one_line_errors(tmp_path, arguments, message):
    (tmp_path / "weights.pt").write_bytes(b"never read")
    arguments = [str(tmp_path / "weights.pt") if argument == "{a file}" else argument for argument in arguments]
    result = run_cli("export-model", *arguments, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    small = random_checkpoint(write_config(tmp_path), tmp_path / "tiny.pt")
    result = run_cli("export-model", "--open-clip", "ViT-B-32", "--weights", str(small), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "does not fit ViT-B-32" in result.stderr


def test_text_embeddings_equal_open_clips_and_long_text_is_cut_off_as_open_clip_does(package, backbone):
    model, _, tokenizer = open_clip_model(package)
    texts = [*PROBE_TEXTS[:4], "word " * 500]
    served = backbone.embed_text(backbone.text.tokenize(texts))
    with torch.no_grad():
        expected = model.encode_text(tokenizer(texts), normalize=True).numpy()
    assert np.sum(served * expected, axis=1).min() >= 0.999
    tokens = backbone.text.tokenize(["word " * 500])
    assert tokens.shape == (1, 77) and int(tokens[0, -1]) == tokenizer.eot_token_id


def test_the_text_tower_at_bf16_is_probed_against_its_own_fp32_on_its_own_captions(package, backbone):
    from predictor.embedding.clip_towers import text_variants

    tower = backbone.text.selection.runner.network
    probe = backbone.text._slices(backbone.text.tokenize(list(PROBE_TEXTS)))
    reference = text_variants("fp32", tower, torch.device("cpu"), lambda: probe)[0][1]()
    bf16 = text_variants("bf16", tower, torch.device("cpu"), lambda: probe)[0][1]()
    cosines = precision.probe_cosines(reference, bf16, probe)
    assert len(cosines) == len(PROBE_TEXTS) and cosines.min() >= 0.98


# Both towers compiled for real: minutes on two cores with a cold cache (`make test-slow`; the compile machinery is
# tested on a tiny network in test_compilation.py).
@pytest.mark.slow
def test_a_text_tower_whose_compiled_graph_fails_the_probe_serves_eager_while_the_image_tower_decides_alone(package):
    if missing_compiler() is not None:
        pytest.skip("Inductor needs a C++ compiler and Python headers")
    strict = Backbone(load_package(package), "cpu", "fp32", probe_min_cosine=1.01, compile_mode="on")
    strict.load()
    assert not strict.text.selection.compiled and "below 1.01" in strict.text.compilation
    assert not strict.selection.compiled and "below 1.01" in strict.compilation


@pytest.mark.slow
@pytest.mark.skipif(missing_compiler() is not None, reason="Inductor needs a C++ compiler and Python headers")
def test_the_compiled_text_tower_passes_its_probe_and_embeds_as_eager(package, backbone):
    compiled = Backbone(load_package(package), "cpu", "fp32", compile_mode="on")
    compiled.load()
    assert compiled.text.selection.compiled, compiled.text.compilation
    assert "compiled for batch sizes 1, 2, 3, 4" in compiled.text.compilation
    texts = list(PROBE_TEXTS[:6])
    served = compiled.embed_text(compiled.text.tokenize(texts))
    cosines = np.sum(served * backbone.embed_text(backbone.text.tokenize(texts)), axis=1)
    assert cosines.min() >= 0.995
