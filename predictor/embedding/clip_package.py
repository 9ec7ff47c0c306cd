"""Model packages made from open_clip models: config, weights, image preprocessing and tokenizer in one directory, so
that a server embeds pictures and words into one space with nothing downloaded at load.

A CLIP package is a model package (model_package.py) whose architecture is `open_clip`. Its directory is also a folder
open_clip itself loads (`open_clip.create_model("local-dir:DIR")`): `open_clip_config.json` holds open_clip's
`model_cfg` and `preprocess_cfg`, and the weights are `open_clip_model.safetensors`. The tokenizer travels with it:
open_clip's BPE vocabulary, or the files of a Hugging Face tokenizer under `tokenizer/`. model.json records the SHA-256
of every file, as it does for any package.
"""

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from predictor.embedding.model_package import ModelSpec

OPEN_CLIP = "open_clip"
CONFIG_NAME = "open_clip_config.json"
CLIP_WEIGHTS_NAME = "open_clip_model.safetensors"
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
HF_TOKENIZER_DIR = "tokenizer"
TOKENIZER_KINDS = ("open_clip-bpe", "huggingface")
# open_clip's resize modes and the serving path's geometry that does the same.
RESIZE_MODES = {"shortest": "center-crop", "squash": "resize", "longest": "letterbox"}


class UnsupportedClipModel(ValueError):
    """An open_clip model this server cannot package or serve; the message says why and what would do."""


@dataclass(frozen=True)
class ClipFiles:
    """The open_clip part of a package: its config file and tokenizer, and what they decide."""

    directory: Path
    config_sha256: str
    embed_dim: int
    context_length: int
    tokenizer_kind: str = "open_clip-bpe"
    tokenizer_files: tuple[tuple[str, str], ...] = ()  # (path relative to the package, SHA-256)
    tokenizer_kwargs: tuple[tuple[str, Any], ...] = ()
    source: str = ""  # the open_clip model name or config file the package was made from, for the record

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_NAME

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.config_path, *(self.directory / name for name, _ in self.tokenizer_files))

    def to_json(self) -> dict:
        return {
            "config": CONFIG_NAME,
            "config_sha256": self.config_sha256,
            "embed_dim": self.embed_dim,
            "context_length": self.context_length,
            "source": self.source,
            "tokenizer": {
                "kind": self.tokenizer_kind,
                "files": [{"file": name, "sha256": sha} for name, sha in self.tokenizer_files],
                "kwargs": dict(self.tokenizer_kwargs),
            },
        }

    def describe(self) -> dict:
        return {"source": self.source, "embed_dim": self.embed_dim, "tokenizer": self.tokenizer_kind}


# Reading a package ----------------------------------------------------------------------------------------------------


def _invalid(message: str) -> Exception:
    from predictor.embedding.model_package import InvalidModelPackage

    return InvalidModelPackage(message)


def _checked(directory: Path, name: Any, sha: Any, what: str, manifest_path: Path) -> tuple[str, str]:
    from predictor.embedding.model_package import file_sha256

    if not isinstance(name, str) or not isinstance(sha, str) or not name or not sha:
        raise _invalid(f"{manifest_path}: every {what} needs a 'file' and a 'sha256'")
    path = (directory / name).resolve()
    if directory.resolve() not in path.parents or not path.is_file():
        raise _invalid(f"{directory}: {what} file {name} is missing")
    actual = file_sha256(path)
    if actual != sha:
        raise _invalid(
            f"{path}: SHA-256 is {actual} but model.json says {sha}; the {what} is corrupt or not this package's"
        )
    return name, sha


def read_clip_section(manifest: dict, directory: Path, manifest_path: Path) -> ClipFiles:
    """The `open_clip` section of model.json, every file it names checked against its hash."""
    section = manifest.get(OPEN_CLIP)
    if not isinstance(section, dict):
        raise _invalid(f"{manifest_path}: an open_clip package needs an '{OPEN_CLIP}' object (export-model writes it)")
    _, config_sha = _checked(directory, section.get("config"), section.get("config_sha256"), "config", manifest_path)
    if section.get("config") != CONFIG_NAME:
        raise _invalid(f"{manifest_path}: the open_clip config must be {CONFIG_NAME}, which open_clip itself reads")
    tokenizer = section.get("tokenizer")
    if not isinstance(tokenizer, dict) or tokenizer.get("kind") not in TOKENIZER_KINDS:
        raise _invalid(f"{manifest_path}: '{OPEN_CLIP}.tokenizer.kind' must be one of {', '.join(TOKENIZER_KINDS)}")
    files = tokenizer.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(entry, dict) for entry in files):
        raise _invalid(f"{manifest_path}: the tokenizer must list its files (the model needs them to read text)")
    checked = tuple(_checked(directory, f.get("file"), f.get("sha256"), "tokenizer", manifest_path) for f in files)
    kwargs = tokenizer.get("kwargs", {})
    embed_dim, context_length = section.get("embed_dim"), section.get("context_length")
    if not isinstance(kwargs, dict) or not isinstance(embed_dim, int) or not isinstance(context_length, int):
        raise _invalid(f"{manifest_path}: '{OPEN_CLIP}' needs integer embed_dim and context_length")
    return ClipFiles(
        directory=directory,
        config_sha256=config_sha,
        embed_dim=embed_dim,
        context_length=context_length,
        tokenizer_kind=tokenizer["kind"],
        tokenizer_files=checked,
        tokenizer_kwargs=tuple(sorted(kwargs.items())),
        source=str(section.get("source", "")),
    )


# Building the network and the tokenizer -------------------------------------------------------------------------------


def build_clip_model(clip: ClipFiles) -> "Any":
    """The open_clip model with the package's weights, built and loaded by open_clip from the package directory."""
    import open_clip

    try:
        return open_clip.create_model(f"local-dir:{clip.directory}").eval()
    except (RuntimeError, ValueError, KeyError, AssertionError) as error:
        raise _invalid(f"{clip.directory}: open_clip cannot build this package: {error}") from None


def build_tokenizer(clip: ClipFiles) -> "Any":
    """A callable that turns a list of strings into [N, context_length] token ids, as open_clip tokenizes them:
    text longer than the context is cut off at the context length, ending with the end-of-text token."""
    kwargs = dict(clip.tokenizer_kwargs)
    if clip.tokenizer_kind == "open_clip-bpe":
        from open_clip.tokenizer import SimpleTokenizer

        bpe = clip.directory / clip.tokenizer_files[0][0]
        return SimpleTokenizer(bpe_path=str(bpe), context_length=clip.context_length, **kwargs)
    try:
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(str(clip.directory / HF_TOKENIZER_DIR), context_length=clip.context_length, **kwargs)
    except ImportError as error:
        raise _invalid(
            f"{clip.directory}: its Hugging Face tokenizer needs the transformers package, which is not installed "
            f"({error}); install transformers in the server's environment"
        ) from None


# Making a package -----------------------------------------------------------------------------------------------------


def _model_config(config: str) -> tuple[dict, dict, str]:
    """(model_cfg, preprocess_cfg, source) from an open_clip model name or a config JSON file: a plain model config,
    or open_clip's `open_clip_config.json` format ({"model_cfg": ..., "preprocess_cfg": ...})."""
    import open_clip

    path = Path(config)
    if path.suffix == ".json" or path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except OSError as error:
            raise UnsupportedClipModel(f"--open-clip {config}: cannot read it: {error.strerror or error}") from None
        except json.JSONDecodeError as error:
            raise UnsupportedClipModel(f"--open-clip {config} is not valid JSON: {error}") from None
        if not isinstance(loaded, dict):
            raise UnsupportedClipModel(f"--open-clip {config} must hold a JSON object")
        model_cfg = loaded.get("model_cfg", loaded)
        preprocess_cfg = loaded.get("preprocess_cfg", {}) if "model_cfg" in loaded else {}
        source = path.name
    else:
        model_cfg = open_clip.get_model_config(config)
        if model_cfg is None:
            raise UnsupportedClipModel(
                f"--open-clip {config!r} is neither an open_clip model name (see open_clip.list_models()) nor a "
                "config JSON file"
            )
        preprocess_cfg, source = {}, config
    if not isinstance(model_cfg, dict) or not all(key in model_cfg for key in ("embed_dim", "vision_cfg", "text_cfg")):
        raise UnsupportedClipModel(f"--open-clip {config}: a model config needs embed_dim, vision_cfg and text_cfg")
    return model_cfg, preprocess_cfg, source


def _check_supported(model_cfg: dict, tokenizer_dir: Path | None, config: str) -> str:
    """The tokenizer kind the package will carry; refuses what would need a download to load."""
    text_cfg = model_cfg.get("text_cfg", {})
    if "hf_model_name" in text_cfg:
        raise UnsupportedClipModel(
            f"--open-clip {config}: its text tower is the Hugging Face model {text_cfg['hf_model_name']!r}, which "
            "open_clip builds from a configuration it fetches from the Hugging Face Hub; such models are not supported"
        )
    if text_cfg.get("hf_tokenizer_name") or "hf_tokenizer_name" in text_cfg:
        if tokenizer_dir is None:
            raise UnsupportedClipModel(
                f"--open-clip {config}: its tokenizer is the Hugging Face tokenizer "
                f"{text_cfg.get('hf_tokenizer_name')!r}, which open_clip would fetch from the Hub; give its files "
                "(tokenizer.json and the rest) with --tokenizer DIR"
            )
        return "huggingface"
    if tokenizer_dir is not None:
        raise UnsupportedClipModel(
            f"--tokenizer: {config} uses open_clip's own BPE tokenizer, which the package carries; drop --tokenizer"
        )
    return "open_clip-bpe"


def preprocessing_of(preprocess_cfg: dict) -> tuple["Any", tuple, tuple]:
    """The serving path's Preprocessing, mean and std for open_clip's preprocess config."""
    from predictor.imaging.decoding import Preprocessing

    size = preprocess_cfg["size"]
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise UnsupportedClipModel(f"image size {list(size)} is not square; only square inputs are supported")
        size = size[0]
    mode = RESIZE_MODES.get(preprocess_cfg.get("resize_mode", "shortest"))
    if mode is None:
        raise UnsupportedClipModel(f"open_clip resize mode {preprocess_cfg.get('resize_mode')!r} is not supported")
    fill = int(preprocess_cfg.get("fill_color", 0))
    geometry = Preprocessing(
        mode=mode, input_size=int(size), resize_shorter_side=int(size), pad_color=(fill, fill, fill)
    )
    return geometry, tuple(float(v) for v in preprocess_cfg["mean"]), tuple(float(v) for v in preprocess_cfg["std"])


def _copy_tokenizer(kind: str, tokenizer_dir: Path | None, out_dir: Path) -> list[str]:
    if kind == "open_clip-bpe":
        from open_clip.tokenizer import default_bpe

        shutil.copyfile(default_bpe(), out_dir / BPE_NAME)
        return [BPE_NAME]
    if tokenizer_dir is None or not tokenizer_dir.is_dir():
        raise UnsupportedClipModel(f"--tokenizer {tokenizer_dir} is not a directory")
    target = out_dir / HF_TOKENIZER_DIR
    target.mkdir(exist_ok=True)
    names = []
    for path in sorted(tokenizer_dir.iterdir()):
        if path.is_file():
            shutil.copyfile(path, target / path.name)
            names.append(f"{HF_TOKENIZER_DIR}/{path.name}")
    if not names:
        raise UnsupportedClipModel(f"--tokenizer {tokenizer_dir} holds no files")
    return names


def export_open_clip(
    config: str,
    checkpoint: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    version: str = "1",
    tokenizer_dir: Path | None = None,
) -> "ModelSpec":
    """Write a CLIP package from an open_clip config and a checkpoint that `open_clip.load_checkpoint` accepts; the
    weights are stored as open_clip's model holds them after loading, so that loading them again is exact."""
    import open_clip
    from safetensors.torch import save_file

    from predictor.embedding.model_package import (
        DEFAULT_PRECISIONS,
        MANIFEST_NAME,
        ModelSpec,
        file_sha256,
        load_package,
        manifest_of,
    )

    model_cfg, preprocess_cfg, source = _model_config(config)
    kind = _check_supported(model_cfg, tokenizer_dir, config)
    if not checkpoint.is_file():
        raise UnsupportedClipModel(f"--weights {checkpoint} is not a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MANIFEST_NAME).exists() or (out_dir / CONFIG_NAME).exists():
        raise UnsupportedClipModel(f"--out {out_dir} holds a model package already; give a new directory")
    with tempfile.TemporaryDirectory() as scratch:
        # open_clip fills in its defaults (mean, std, interpolation, size) when it builds the model from a folder.
        draft = Path(scratch) / CONFIG_NAME
        draft.write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}))
        model = open_clip.create_model(f"local-dir:{scratch}")
    try:
        open_clip.load_checkpoint(model, str(checkpoint))
    except (RuntimeError, KeyError, ValueError, OSError, AssertionError) as error:
        # open_clip asserts on some mismatches (a text context of another length) instead of raising.
        raise UnsupportedClipModel(f"--weights {checkpoint} does not fit {source}: {error}") from None
    preprocess = dict(model.visual.preprocess_cfg)
    preprocess["size"] = list(preprocess["size"]) if isinstance(preprocess["size"], tuple) else preprocess["size"]
    geometry, mean, std = preprocessing_of(preprocess)
    config_path = out_dir / CONFIG_NAME
    config_path.write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2) + "\n")
    weights_path = out_dir / CLIP_WEIGHTS_NAME
    state = {key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()}
    # Tied or shared tensors would make safetensors refuse the file; every entry gets storage of its own.
    save_file(
        {key: tensor.clone() if _shares_storage(tensor, state) else tensor for key, tensor in state.items()},
        str(weights_path),
    )
    tokenizer_names = _copy_tokenizer(kind, tokenizer_dir, out_dir)
    text_cfg = model_cfg["text_cfg"]
    clip = ClipFiles(
        directory=out_dir,
        config_sha256=file_sha256(config_path),
        embed_dim=int(model_cfg["embed_dim"]),
        context_length=int(text_cfg.get("context_length", 77)),
        tokenizer_kind=kind,
        tokenizer_files=tuple((n, file_sha256(out_dir / n)) for n in tokenizer_names),
        tokenizer_kwargs=tuple(sorted(text_cfg.get("tokenizer_kwargs", {}).items())),
        source=source,
    )
    spec = ModelSpec(
        name=name or source.removesuffix(".json"),
        version=version,
        architecture=OPEN_CLIP,
        dimension=clip.embed_dim,
        weights_path=weights_path,
        preprocessing=geometry,
        mean=mean,
        std=std,
        precisions=DEFAULT_PRECISIONS,
        clip=clip,
    )
    manifest = manifest_of(spec, file_sha256(weights_path))
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return load_package(out_dir)


def _shares_storage(tensor: "Any", state: dict) -> bool:
    pointer = tensor.untyped_storage().data_ptr()
    return sum(other.untyped_storage().data_ptr() == pointer for other in state.values()) > 1
