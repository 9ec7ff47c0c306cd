"""`image-search sample-catalogue` and `export-model`: the bundled photos and model, written out as files."""

import argparse
from pathlib import Path


def _sample_catalogue(args: argparse.Namespace) -> int:
    from predictor.catalogue import write_catalogue, write_labelled_sample

    if args.labelled:
        write_labelled_sample(Path(args.out))
        print(f"labelled sample photos (one folder per category) in {args.out}")
        return 0
    paths = write_catalogue(Path(args.out))
    print(f"{len(paths)} sample photos in {args.out}")
    return 0


def _export_model(args: argparse.Namespace) -> int:
    from predictor.model_package import default_spec, export_package

    out = export_package(default_spec(), Path(args.out))
    print(f"wrote model package {out}")
    return 0


def register(add_command, for_serving: bool) -> None:
    catalogue = add_command("sample-catalogue", help="Write the bundled sample photographs as JPEG files.")
    catalogue.add_argument("--out", default="data/sample-catalogue", help="Directory to write them to.")
    catalogue.add_argument("--labelled", action="store_true", help="Write them in category folders, for eval.")
    catalogue.set_defaults(handler=_sample_catalogue)

    export = add_command("export-model", help="Write the bundled model as a model package directory.")
    export.add_argument("--out", required=True, help="Directory to write model.json and the weights to.")
    export.set_defaults(handler=_export_model)
