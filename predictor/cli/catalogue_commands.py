"""`image-search sample-catalogue` and `export-model`: the bundled photos and model, written out as files."""

import argparse
from pathlib import Path


def _sample_catalogue(args: argparse.Namespace) -> int:
    from predictor.imaging.sample_catalogue import write_catalogue, write_labelled_sample

    if args.labelled:
        write_labelled_sample(Path(args.out))
        print(f"labelled sample photos (one folder per category) in {args.out}")
        return 0
    paths = write_catalogue(Path(args.out))
    print(f"{len(paths)} sample photos in {args.out}")
    return 0


def _export_model(args: argparse.Namespace) -> int:
    if args.open_clip is None:
        for flag in ("weights", "tokenizer", "name", "version"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} goes with --open-clip; without it export-model writes the bundled model")
        from predictor.embedding.model_package import default_spec, export_package

        out = export_package(default_spec(), Path(args.out))
        print(f"wrote model package {out}")
        return 0
    if args.weights is None:
        raise ValueError("--open-clip needs --weights CHECKPOINT (a file open_clip's load_checkpoint accepts)")
    # Before open_clip is imported: that alone takes seconds.
    if not Path(args.weights).is_file():
        raise ValueError(f"--weights {args.weights} is not a file")
    from predictor.embedding.clip_package import export_open_clip

    spec = export_open_clip(
        args.open_clip,
        Path(args.weights),
        Path(args.out),
        name=args.name,
        version=args.version or "1",
        tokenizer_dir=Path(args.tokenizer) if args.tokenizer else None,
    )
    print(f"wrote CLIP model package {args.out}: {spec.identity}, image and text embeddings of {spec.dimension}")
    return 0


def register(add_command, for_serving: bool) -> None:
    catalogue = add_command("sample-catalogue", help="Write the bundled sample photographs as JPEG files.")
    catalogue.add_argument("--out", default="data/sample-catalogue", help="Directory to write them to.")
    catalogue.add_argument("--labelled", action="store_true", help="Write them in category folders, for eval.")
    catalogue.set_defaults(handler=_sample_catalogue)

    export = add_command(
        "export-model", help="Write the bundled model, or an open_clip model (--open-clip), as a model package."
    )
    export.add_argument("--out", required=True, help="Directory to write model.json and the weights to.")
    export.add_argument(
        "--open-clip",
        metavar="CONFIG",
        help="Package this open_clip model: a model name (ViT-B-32, ...) or the path of an open_clip config JSON.",
    )
    export.add_argument(
        "--weights", metavar="CHECKPOINT", help="With --open-clip: a checkpoint that open_clip's load_checkpoint reads."
    )
    export.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="With --open-clip, for a model with a Hugging Face tokenizer: the folder of its files.",
    )
    export.add_argument("--name", help="With --open-clip: the model name (default: the config's name).")
    export.add_argument("--version", help="With --open-clip: the model version (default 1).")
    export.set_defaults(handler=_export_model)
