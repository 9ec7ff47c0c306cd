"""`image-search fit-projection`: a new model version whose vectors are centred (and optionally PCA-whitened) for a
catalogue."""

import argparse
from pathlib import Path


def _fit_projection(args: argparse.Namespace) -> int:
    from predictor.cli.output_files import check_writable_folder
    from predictor.embedding.model_package import default_base_spec, resolve_spec
    from predictor.embedding.projection_fitting import fit_package
    from predictor.index.ingestion import discover

    if args.dimension is None and args.whiten:
        raise ValueError("--whiten needs --dimension: whitening is part of the PCA")
    out = Path(args.out)
    # Checked before the catalogue's sample is embedded, which is most of the command's time.
    check_writable_folder(args.out, "--out")
    if (out / "model.json").exists():
        raise ValueError(f"{out} already holds a model package; choose an empty --out")
    spec = fit_package(
        resolve_spec(args.model_dir) if args.model_dir else default_base_spec(),
        discover(args.catalogue),
        out,
        dimension=args.dimension,
        whitening_power=0.5 if args.whiten else 0.0,
        sample=args.sample,
        seed=args.seed,
        source=", ".join(args.catalogue),
        device=args.device,
    )
    projection = spec.projection
    assert projection is not None  # fit_package always writes one
    fitted = projection.fitted_on
    print(f"wrote model package {out}: {spec.identity}, {projection.kind} fitted on {fitted['images']} images")
    print(f"it is a new model version: index into it with  image-search index SOURCE --model-dir {out}")
    return 0


def register(add_command, for_serving: bool) -> None:
    from predictor.cli.options import add_model_arguments

    fit = add_command(
        "fit-projection", help="Fit mean centring (and optionally PCA) on a catalogue; write a new model version."
    )
    fit.add_argument("--catalogue", action="append", required=True, help="Images to fit on (directory or list).")
    fit.epilog = "Without --model-dir it fits the bundled default's base model (the default less its projection)."
    fit.add_argument("--out", required=True, help="Directory for the new model package.")
    fit.add_argument("--dimension", type=int, help="Keep this many principal components (default: centring only).")
    fit.add_argument("--whiten", action="store_true", help="Whiten the kept components (needs --dimension).")
    fit.add_argument("--sample", type=int, default=2000, help="Fit on at most this many catalogue images.")
    fit.add_argument("--seed", type=int, default=0, help="Seed of the sample, so a fit can be repeated.")
    add_model_arguments(fit)
    fit.set_defaults(handler=_fit_projection)
