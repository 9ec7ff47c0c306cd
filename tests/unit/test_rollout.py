"""The canary analysis without Prometheus: its queries are the recording rules', its loop decides like Argo Rollouts.

The analysis against a real Prometheus scraping real predictors is tests/e2e/test_rollout.py.
"""

import re
import socket
from pathlib import Path

import pytest
import yaml

from predictor.cli import main
from predictor.rollout import canary as rollout
from predictor.rollout.canary import Analysis, Decision, Thresholds, analyze_repeatedly, parse_duration

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "rules" / "image-search.rules.yaml"
RULE_GROUPING = "namespace, model, model_version"


def recorded() -> dict[tuple[str, str | None], str]:
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    return {
        (rule["record"], rule.get("labels", {}).get("quantile")): rule["expr"] for rule in rules if "record" in rule
    }


def normalised(expr: str) -> str:
    expr = re.sub(r"\s+", " ", expr).strip()
    expr = expr.replace(",}", "}").replace("{}", "")
    return re.sub(r"\( ", "(", expr)


def as_rule(template: str, window: str) -> str:
    return normalised(template.format(by=RULE_GROUPING, match="", window=window))


@pytest.mark.parametrize(
    ("template", "record", "quantile", "window"),
    [
        (rollout.REQUESTS_RATE, "namespace_model_version:image_search_requests:rate5m", None, "5m"),
        (rollout.ERRORS_RATE, "namespace_model_version:image_search_request_errors:rate5m", None, "5m"),
        (
            rollout.P99_LATENCY,
            "namespace_model_version_quantile:image_search_request_duration_seconds:rate5m",
            "0.99",
            "5m",
        ),
        (
            rollout.TOP1_QUERIES_RATE,
            "namespace_model_version:image_search_top1_similarity_queries:rate30m",
            None,
            "30m",
        ),
        (rollout.TOP1_MEDIAN, "namespace_model_version_quantile:image_search_top1_similarity:rate30m", "0.5", "30m"),
    ],
)
def test_each_measure_is_the_recording_rule_at_another_window(template, record, quantile, window):
    assert as_rule(template, window) == normalised(recorded()[(record, quantile)])


def test_the_error_ratio_divides_the_two_recorded_rates_as_the_rule_does():
    rules = recorded()
    ratio_rule = normalised(rules[("namespace_model_version:image_search_request_errors:ratio_rate5m", None)])
    expanded = ratio_rule.replace(
        "namespace_model_version:image_search_request_errors:rate5m",
        normalised(rules[("namespace_model_version:image_search_request_errors:rate5m", None)]),
    ).replace(
        "namespace_model_version:image_search_requests:rate5m",
        normalised(rules[("namespace_model_version:image_search_requests:rate5m", None)]),
    )
    assert as_rule(rollout.ERROR_RATIO, "5m") == expanded


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("90s", 90), ("1h30m", 5400), ("50ms", 0.05), ("1d", 86400), ("2w", 1209600), ("1m30s", 90)],
)
def test_durations_read_as_prometheus_writes_them(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "5 m", "1.5m", "-1m", "m"])
def test_a_malformed_duration_says_what_it_should_look_like(text):
    with pytest.raises(ValueError, match="is not like"):
        parse_duration(text)


def test_a_zero_duration_is_refused_unless_allowed():
    with pytest.raises(ValueError, match="longer than 0s"):
        parse_duration("0s")
    assert parse_duration("0s", allow_zero=True) == 0


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("max_error_ratio_increase", 1.5, "--max-error-ratio-increase"),
        ("max_p99_ratio", 0.9, "--max-p99-ratio"),
        ("p99_slack_s", -0.1, "--p99-slack"),
        ("max_top1_drop", -0.1, "--max-top1-drop"),
        ("min_requests", 0, "--min-requests"),
    ],
)
def test_thresholds_that_cannot_work_name_their_flag(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        Thresholds(**{field: value})


def analysis(decision: Decision) -> Analysis:
    return Analysis("1", "2", "10m", (), decision, decision.name)


class Script:
    """Checks that return decisions in a given order, on a clock that advances only when the loop sleeps."""

    def __init__(self, *decisions: Decision) -> None:
        self.decisions = list(decisions)
        self.calls = 0
        self.now = 0.0

    def check(self) -> Analysis:
        self.calls += 1
        return analysis(self.decisions.pop(0))

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def run(self, **options) -> Analysis:
        return analyze_repeatedly(self.check, sleep=self.sleep, clock=lambda: self.now, interval_s=60, **options)


P, F, W = Decision.PROMOTE, Decision.ROLL_BACK, Decision.NOT_ENOUGH_DATA


def test_one_check_by_default_whatever_it_says():
    for decision in Decision:
        script = Script(decision)
        assert script.run().decision is decision
        assert script.calls == 1


def test_promotes_after_the_passing_checks_asked_for_and_ignores_checks_without_data():
    script = Script(W, P, W, P, P)
    assert script.run(checks=3, deadline_s=3600).decision is Decision.PROMOTE
    assert script.calls == 5


def test_rolls_back_once_failures_pass_the_limit():
    script = Script(P, F, P, F, P)
    assert script.run(checks=4, failure_limit=1, deadline_s=3600).decision is Decision.ROLL_BACK
    assert script.calls == 4


def test_undecided_at_the_deadline_is_not_enough_data_and_says_how_far_it_got():
    script = Script(P, W, F, W, W, W)
    result = script.run(checks=3, failure_limit=1, deadline_s=240)
    assert result.decision is Decision.NOT_ENOUGH_DATA
    assert "1 of 3 checks passed and 1 failed" in result.reason
    assert script.calls == 5  # at 0, 60, 120, 180 and 240 s; the next would start after the deadline


def test_loop_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="--checks"):
        analyze_repeatedly(lambda: analysis(P), checks=0)
    with pytest.raises(ValueError, match="--failure-limit"):
        analyze_repeatedly(lambda: analysis(P), failure_limit=-1)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_prometheus_is_one_line_and_no_decision(capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    status = main(["rollout", "analyze", "--prometheus", url, "--stable-version", "1", "--canary-version", "2"])
    err = capsys.readouterr().err
    assert status == Decision.NOT_ENOUGH_DATA
    assert err.startswith("image-search rollout: error: cannot reach Prometheus") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prometheus", "prometheus:9090"], "must be an http:// or https:// URL"),
        (["--prometheus", "http://p:9090", "--window", "ten"], "is not like"),
        (["--prometheus", "http://p:9090", "--canary-version", "1"], "both '1'"),
    ],
)
def test_bad_arguments_are_one_clear_line(capsys, args, message):
    argv = ["rollout", "analyze", "--stable-version", "1", "--canary-version", "2", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("stable_s", "canary_s", "expected"),
    [
        (0.100, 0.150, rollout.Result.PASS),  # within stable + slack (0.1 + 0.05 = 0.15 s)
        (0.100, 0.151, rollout.Result.FAIL),
        (1.000, 1.200, rollout.Result.PASS),  # within 1.2 x stable, the larger limit for a slow stable
        (1.000, 1.201, rollout.Result.FAIL),
    ],
)
def test_the_canary_p99_may_reach_the_larger_of_the_ratio_and_the_slack_over_stable(stable_s, canary_s, expected):
    thresholds = Thresholds(max_p99_ratio=1.2, p99_slack_s=0.05)
    check = rollout._p99_check((stable_s, canary_s), thresholds, enough=True)
    assert check.result is expected
    assert rollout._p99_check((stable_s, canary_s), thresholds, enough=False).result is rollout.Result.NO_DATA
