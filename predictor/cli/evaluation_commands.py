"""`image-search eval`: the quality gate a model version must pass before it is promoted."""

import argparse
import sys
from pathlib import Path


def _eval(args: argparse.Namespace) -> int:
    from predictor.backbone import Backbone
    from predictor.evaluation import evaluate, gate_failures, write_report
    from predictor.model_package import resolve_spec

    backbone = Backbone(resolve_spec(args.model_dir), args.device, args.precision)
    backbone.load()
    report = evaluate(backbone, Path(args.labelled), k=args.k)
    print(report.table())
    write_report(report, Path(args.report))
    print(f"\nreport written to {args.report}")
    failures = gate_failures(report, args.min_precision, args.min_recall)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def register(add_command, for_serving: bool) -> None:
    from predictor.config import add_model_arguments

    evaluation = add_command("eval", help="Score a model on a labelled folder; fail below thresholds.")
    evaluation.add_argument("--labelled", required=True, help="Folder with one sub-folder of images per category.")
    evaluation.add_argument("--k", type=int, default=5, help="k of precision@k.")
    evaluation.add_argument("--min-precision", type=float, default=0.0, help="Fail if mean precision@k is lower.")
    evaluation.add_argument("--min-recall", type=float, default=0.0, help="Fail if near-duplicate recall@1 is lower.")
    evaluation.add_argument("--report", default="eval-report.json", help="Where to write the JSON report.")
    add_model_arguments(evaluation)
    evaluation.set_defaults(handler=_eval)
