"""Tiny open_clip models with random weights, made at test time: no CLIP weights can be downloaded here.

`tiny_config` is a 2-layer ViT of width 64 and a 2-layer text tower of width 64: each tower embeds in milliseconds.
`vit_b_32_config` is open_clip's ViT-B-32, for measuring speed at the real size.
"""

import json
from pathlib import Path

TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_config(directory: Path, config: dict = TINY_CONFIG, name: str = "tiny-clip") -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def random_checkpoint(config: str | Path, out: Path, seed: int = 0) -> Path:
    """A checkpoint that open_clip's `load_checkpoint` accepts: the state dict of a freshly initialised model."""
    import open_clip
    import torch

    from predictor.embedding.clip_package import _model_config

    model_cfg, _, _ = _model_config(str(config))
    torch.manual_seed(seed)
    model_class = open_clip.CustomTextCLIP if "hf_model_name" in model_cfg["text_cfg"] else open_clip.CLIP
    model = model_class(**model_cfg)
    # Random logit scale and text projection stay as open_clip initialises them; the projection is the identity
    # otherwise in no way that matters for these tests.
    torch.save(model.state_dict(), out)
    return out


def make_package(directory: Path, *, version: str = "1", seed: int = 0, config: dict = TINY_CONFIG) -> Path:
    """export-model --open-clip on a tiny random model, as a user would run it; returns the package directory."""
    from predictor.embedding.clip_package import export_open_clip

    directory.mkdir(parents=True, exist_ok=True)
    config_path = write_config(directory)
    checkpoint = random_checkpoint(config_path, directory / "checkpoint.pt", seed)
    out = directory / f"package-{version}"
    export_open_clip(str(config_path), checkpoint, out, name="tiny-clip", version=version)
    return out


def open_clip_model(package: Path):
    """The same model as open_clip itself loads it from the package folder, with its own preprocessing and
    tokenizer: the reference the server's embeddings are compared with."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{package}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{package}")
