"""`image-search rollout analyze`: judge a canary model version against the stable one from Prometheus."""

import argparse
import os
import sys

EXIT_CODES = "Exit status: 0 promote, 1 roll back, 2 not enough data yet (or Prometheus could not be asked)."


def _analyze(args: argparse.Namespace) -> int:
    from predictor.rollout.canary import (
        Analysis,
        Decision,
        PrometheusClient,
        PrometheusError,
        Thresholds,
        analyze,
        analyze_repeatedly,
        parse_duration,
    )

    thresholds = Thresholds(
        max_error_ratio_increase=args.max_error_ratio_increase,
        max_p99_ratio=args.max_p99_ratio,
        p99_slack_s=parse_duration(args.p99_slack, allow_zero=True),
        max_top1_drop=args.max_top1_drop,
        min_requests=args.min_requests,
    )
    parse_duration(args.window)
    client = PrometheusClient(args.prometheus, bearer_token=os.environ.get("PROMETHEUS_BEARER_TOKEN") or None)

    def check() -> Analysis:
        return analyze(
            client,
            stable_version=args.stable_version,
            canary_version=args.canary_version,
            window=args.window,
            model=args.model,
            namespace=args.namespace,
            thresholds=thresholds,
        )

    reported: list[Analysis] = []

    def report(analysis: Analysis) -> None:
        reported.append(analysis)
        print(analysis.table(), end="\n\n", flush=True)

    try:
        analysis = analyze_repeatedly(
            check,
            checks=args.checks,
            interval_s=parse_duration(args.interval),
            failure_limit=args.failure_limit,
            deadline_s=parse_duration(args.deadline, allow_zero=True),
            report=report,
        )
    except PrometheusError as error:
        print(f"image-search rollout: error: {error}", file=sys.stderr)
        return int(Decision.NOT_ENOUGH_DATA)
    if analysis is not reported[-1]:
        print(f"verdict: wait ({analysis.reason})")
    return int(analysis.decision)


def register(add_command, for_serving: bool) -> None:
    rollout = add_command("rollout", help="Canary rollouts: compare a canary model version with the stable one.")
    actions = rollout.add_subparsers(dest="rollout_command", required=True)
    analyze = actions.add_parser(
        "analyze",
        help="Compare error ratio, p99 latency and median top-1 similarity of canary and stable in Prometheus.",
        description="Compare error ratio, p99 latency and median top-1 similarity of canary and stable over a window, "
        "print a verdict table and exit with the decision. " + EXIT_CODES,
    )
    analyze.add_argument(
        "--prometheus",
        required=True,
        help="Prometheus URL, e.g. http://prometheus:9090. "
        "Env PROMETHEUS_BEARER_TOKEN, if set, is sent as a bearer token.",
    )
    analyze.add_argument("--stable-version", required=True, help="model_version label of the stable model.")
    analyze.add_argument("--canary-version", required=True, help="model_version label of the canary model.")
    analyze.add_argument("--window", default="10m", help="How far back to look, as 30s, 10m or 1h (default 10m).")
    analyze.add_argument("--model", default="image-search", help="model label to compare (default image-search).")
    analyze.add_argument("--namespace", help="Only series with this namespace label (default: any).")
    analyze.add_argument(
        "--min-requests",
        type=int,
        default=100,
        help="Requests (and top-1 queries) each version needs in the window before anything is decided (default 100).",
    )
    analyze.add_argument(
        "--max-error-ratio-increase",
        type=float,
        default=0.01,
        help="Roll back when the canary's error ratio exceeds stable's by more than this, e.g. 0.01 = 1 point.",
    )
    analyze.add_argument(
        "--max-p99-ratio",
        type=float,
        default=1.5,
        help="Roll back when the canary's p99 latency exceeds stable's times this and stable's plus --p99-slack.",
    )
    analyze.add_argument(
        "--p99-slack",
        default="50ms",
        help="p99 differences up to this are noise of the histogram's buckets, never a regression (default 50ms).",
    )
    analyze.add_argument(
        "--max-top1-drop",
        type=float,
        default=0.1,
        help="Roll back when the canary's median top-1 similarity is lower than stable's by more than this.",
    )
    analyze.add_argument("--checks", type=int, default=1, help="Passing checks needed to promote (default 1).")
    analyze.add_argument("--interval", default="1m", help="Time between checks when --checks > 1 (default 1m).")
    analyze.add_argument(
        "--failure-limit", type=int, default=0, help="Failed checks tolerated before rolling back (default 0)."
    )
    analyze.add_argument(
        "--deadline",
        default="0s",
        help="Start no check later than this after the first, e.g. 30m; undecided by then means status 2. "
        "The default 0s makes one check.",
    )
    analyze.set_defaults(handler=_analyze)
