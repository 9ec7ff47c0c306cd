"""`image-search eval`: the quality gate, an option comparison, or a running server's figures."""

import argparse
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from predictor.cli.mlflow_options import add_tracking_arguments, check_tracking_arguments, track_evaluation
from predictor.cli.output_files import check_writable


def _eval_set(args: argparse.Namespace, directory: str, scratch: Path):
    from predictor.evaluation.retrieval import load_eval_set

    near_duplicates = Path(args.near_duplicates) if args.near_duplicates else None
    return load_eval_set(Path(directory), near_duplicates, copies_dir=None if near_duplicates else scratch)


def _named_set(value: str) -> tuple[str, Path, Path | None]:
    name, separator, folders = value.partition("=")
    labelled, _, near_duplicates = folders.partition(":")
    if not separator or not name or not labelled:
        raise ValueError(f"--set takes NAME=LABELLED_DIR[:NEAR_DUPLICATES_DIR], got {value!r}")
    return name, Path(labelled), Path(near_duplicates) if near_duplicates else None


def _compare(args: argparse.Namespace, scratch: Path) -> int:
    from predictor.evaluation.options import built_in_options, compare
    from predictor.evaluation.retrieval import load_eval_set, write_json
    from predictor.index.ingestion import discover

    if not args.fit_set:
        raise ValueError("--compare needs --fit-set DIR: projections are fitted there, never on the evaluated images")
    sets = {"dev": _eval_set(args, args.labelled, scratch / "dev")}
    extra = ([f"cross={args.cross_check}"] if args.cross_check else []) + (args.set or [])
    for name, labelled, near_duplicates in (_named_set(value) for value in extra):
        if name in sets:
            raise ValueError(f"--set {name}: two sets are named {name}; give each its own name")
        sets[name] = load_eval_set(labelled, near_duplicates)
    from predictor.embedding.projection_fitting import sample_paths

    fit_paths = sample_paths(discover([args.fit_set]), args.fit_sample, seed=0)
    comparison = compare(
        built_in_options(args.option),
        sets,
        fit_paths,
        fitted_on=args.fit_set,
        speed_rounds=args.speed_rounds,
        device=args.device,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(comparison.table())
    write_json(comparison, Path(args.report))
    print(f"\nreport written to {args.report}")
    return 0


def _single(args: argparse.Namespace, scratch: Path) -> int:
    from predictor.embedding.model_package import resolve_spec
    from predictor.evaluation.retrieval import EvalReport, gate_failures, write_json

    spec = resolve_spec(args.model_dir)
    eval_set = _eval_set(args, args.labelled, scratch)
    if args.url:
        from predictor.evaluation.served import evaluate_served

        scores = evaluate_served(args.url, eval_set)
        model = f"{spec.identity} served at {args.url}"
        conditions = {"mode": "served"}
    else:
        from predictor.embedding.backbone import Backbone
        from predictor.embedding.compilation import for_batch_job
        from predictor.embedding.file_embedding import backbone_embedder
        from predictor.evaluation.retrieval import evaluate

        images = len(eval_set.labelled) + len(eval_set.originals) + len(eval_set.copies)
        compile_mode = for_batch_job(args.compile, images)
        backbone = Backbone(spec, args.device, args.precision, compile_mode=compile_mode)
        backbone.load()
        scores = evaluate(backbone_embedder(backbone), eval_set)
        model = str(spec.identity)
        conditions = {"mode": "in-process", "device": str(backbone.device), "precision": backbone.precision}
    text_scores = None
    if spec.has_text_tower and not args.url:
        from predictor.evaluation.text_to_image import evaluate_text_to_image

        text_scores = evaluate_text_to_image(backbone, eval_set, args.text_template)
    report = EvalReport(model=model, spec=spec.describe(), scores=scores)
    print(report.table())
    payload = asdict(report)
    if text_scores is not None:
        print("\n" + text_scores.table())
        payload["scores"]["text_to_image"] = asdict(text_scores)
    write_json(payload, Path(args.report))
    print(f"\nreport written to {args.report}")
    failures = gate_failures(scores, args.min_precision, args.min_recall)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    tracked = track_evaluation(args, Path(args.report), not failures, conditions)
    return 1 if failures else tracked


def _eval(args: argparse.Namespace) -> int:
    check_tracking_arguments(args)
    # The report is written after the whole evaluation, which takes hours on a real set.
    check_writable(args.report, "--report", makes_folders=True)
    from predictor.evaluation.text_to_image import check_template

    check_template(args.text_template)
    with tempfile.TemporaryDirectory() as scratch:
        return _compare(args, Path(scratch)) if args.compare else _single(args, Path(scratch))


def register(add_command, for_serving: bool) -> None:
    from predictor.cli.options import add_model_arguments

    evaluation = add_command(
        "eval",
        help="Score a model on a labelled folder (p@1, p@5, mAP@10, near-duplicate recall@1); fail below thresholds.",
    )
    evaluation.add_argument("--labelled", required=True, help="Folder with one sub-folder of images per category.")
    evaluation.add_argument(
        "--near-duplicates",
        help="Folder with originals/ and copies/<original stem>--<n>.jpg; without it each labelled image gets one "
        "edited copy.",
    )
    evaluation.add_argument("--min-precision", type=float, default=0.0, help="Fail if precision@5 is lower.")
    evaluation.add_argument("--min-recall", type=float, default=0.0, help="Fail if near-duplicate recall@1 is lower.")
    evaluation.add_argument("--report", default="eval-report.json", help="Where to write the JSON report.")
    evaluation.add_argument(
        "--url", help="Measure a running server (its collection must hold the images) instead of in process."
    )
    evaluation.add_argument(
        "--compare", action="store_true", help="Compare the built-in preprocessing/model/pooling/projection options."
    )
    evaluation.add_argument(
        "--cross-check", help="With --compare: a second labelled folder, scored alongside (as --set cross=DIR)."
    )
    evaluation.add_argument(
        "--set",
        action="append",
        metavar="NAME=LABELLED[:NEAR_DUPLICATES]",
        help="With --compare: one more labelled folder scored alongside, optionally with its own near-duplicates "
        "(searched against their originals and this set); repeat for more.",
    )
    evaluation.add_argument(
        "--option",
        action="append",
        metavar="NAME",
        help="With --compare: only this built-in option (and the first, the ratios' baseline); repeat for more.",
    )
    evaluation.add_argument(
        "--text-template",
        default="a photo of a {category}",
        help="For a model with a text tower (in process): the text query of each category, text -> image.",
    )
    evaluation.add_argument("--fit-set", help="With --compare: images that projections are fitted on.")
    evaluation.add_argument("--fit-sample", type=int, default=400, help="With --compare: fit on this many of them.")
    evaluation.add_argument("--speed-rounds", type=int, default=3, help="With --compare: interleaved timing rounds.")
    add_model_arguments(evaluation)
    add_tracking_arguments(evaluation)
    evaluation.set_defaults(handler=_eval)
