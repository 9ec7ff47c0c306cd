"""Canary analysis: compare a canary model version with the stable one in Prometheus, and decide.

Three measures, each read for both versions over one window, the way the recording rules in `monitoring/rules` define
them (a unit test keeps the expressions here identical to the rules, so the analysis needs no rules loaded and works
for any window):

- error ratio: failed requests over all requests (bad input counts too, as in the alert: a canary that rejects what
  stable accepts is a regression; a request its client gave up on does not);
- p99 latency of the requests that were not rejected as bad input;
- median top-1 similarity: how close the best match of a query is. A canary whose weights do not fit the index it
  searches (corrupt weights, a package exported from the wrong checkpoint) finds nothing close and drops here.

As in Flagger and Argo Rollouts, each measure has a threshold, nothing is decided below a minimum number of requests
per version, and `analyze_repeatedly` runs the check at an interval until enough checks passed or too many failed.
The thresholds are relative to stable, as in Kayenta's judge: a canary is compared with what serves now, under the
same traffic, not with fixed numbers that would need tuning per cluster.
"""

from __future__ import annotations

import enum
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Analysis",
    "Check",
    "Decision",
    "PrometheusClient",
    "PrometheusError",
    "Thresholds",
    "analyze",
    "analyze_repeatedly",
    "parse_duration",
]

# The recording rules' expressions with their grouping, label matchers and window as placeholders. `{match}` sits
# inside a selector's braces (PromQL accepts the trailing comma it leaves).
REQUESTS_RATE = "sum by ({by}) (rate(image_search_requests_total{{{match}}}[{window}]))"
ERRORS_RATE = 'sum by ({by}) (rate(image_search_requests_total{{outcome!~"success|cancelled",{match}}}[{window}]))'
ERROR_RATIO = f"{ERRORS_RATE}\n  / ({REQUESTS_RATE} > 0)"
P99_LATENCY = (
    "histogram_quantile(0.99, sum by ({by}, le)\n"
    '  (rate(image_search_request_duration_seconds_bucket{{outcome!="bad_input",{match}}}[{window}])))'
)
TOP1_QUERIES_RATE = "sum by ({by}) (rate(image_search_top1_similarity_count{{{match}}}[{window}]))"
TOP1_MEDIAN = (
    "histogram_quantile(0.5, sum by ({by}, le)\n  (rate(image_search_top1_similarity_bucket{{{match}}}[{window}])))"
)

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS_S = (7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Seconds in a Prometheus-style duration such as `10m`, `90s`, `50ms` or `1h30m`."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"duration {text!r} is not like 50ms, 30s, 10m or 1h30m")
    seconds = sum(int(value) * unit for value, unit in zip(match.groups(), _DURATION_UNITS_S, strict=True) if value)
    if seconds <= 0 and not allow_zero:
        raise ValueError(f"duration {text!r} must be longer than 0s")
    return seconds


class Decision(enum.IntEnum):
    """The verdict, valued as the command's exit status."""

    PROMOTE = 0
    ROLL_BACK = 1
    NOT_ENOUGH_DATA = 2


@dataclass(frozen=True)
class Thresholds:
    """How much worse than stable the canary may be, and how much traffic a decision needs."""

    # Absolute: 0.01 lets a canary fail 1 more request in 100 than stable does.
    max_error_ratio_increase: float = 0.01
    # The canary's p99 may reach stable's times this, or stable's plus the slack, whichever is larger. Latency
    # histograms have coarse buckets (25, 50, 100, 250 ms ...), and tens of milliseconds between two estimates inside
    # one bucket are noise, not a regression.
    max_p99_ratio: float = 1.5
    p99_slack_s: float = 0.05
    # Absolute, on a cosine similarity: the bundled model's median on near-duplicate queries is about 0.9 and a
    # model that does not fit its index falls to about 0.4 (docs/kubernetes.md).
    max_top1_drop: float = 0.1
    # Per version, in the window; below it the answer is "not enough data yet", never a decision.
    min_requests: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.max_error_ratio_increase <= 1:
            raise ValueError(f"--max-error-ratio-increase must be between 0 and 1, got {self.max_error_ratio_increase}")
        if self.max_p99_ratio < 1:
            raise ValueError(f"--max-p99-ratio must be 1 or more, got {self.max_p99_ratio}")
        if self.p99_slack_s < 0:
            raise ValueError(f"--p99-slack must not be negative, got {self.p99_slack_s}")
        if not 0 <= self.max_top1_drop <= 2:
            raise ValueError(f"--max-top1-drop must be between 0 and 2, got {self.max_top1_drop}")
        if self.min_requests < 1:
            raise ValueError(f"--min-requests must be at least 1, got {self.min_requests}")


class Result(enum.Enum):
    PASS = "pass"
    FAIL = "FAIL"
    NO_DATA = "no data"


@dataclass(frozen=True)
class Check:
    """One row of the verdict table."""

    measure: str
    stable: float | None
    canary: float | None
    limit: str
    result: Result
    unit: str = ""

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.unit == "%":
            return f"{value * 100:.2f}%"
        if self.unit == "ms":
            return f"{value * 1000:.0f} ms"
        if self.unit == "count":
            return f"{value:.0f}"
        return f"{value:.3f}"


@dataclass(frozen=True)
class Analysis:
    stable_version: str
    canary_version: str
    window: str
    checks: tuple[Check, ...]
    decision: Decision
    reason: str

    def table(self) -> str:
        header = ("measure", f"stable {self.stable_version}", f"canary {self.canary_version}", "canary limit", "result")
        rows = [header] + [
            (check.measure, check.format(check.stable), check.format(check.canary), check.limit, check.result.value)
            for check in self.checks
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
        verdict = {Decision.PROMOTE: "promote", Decision.ROLL_BACK: "roll back", Decision.NOT_ENOUGH_DATA: "wait"}
        lines.append(f"verdict: {verdict[self.decision]} ({self.reason})")
        return "\n".join(lines)


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or refused the query."""


class PrometheusClient:
    """Instant queries over Prometheus' HTTP API, with nothing but the standard library."""

    def __init__(self, url: str, *, timeout_s: float = 30.0, bearer_token: str | None = None) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"--prometheus {url!r} must be an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant vector as (labels, value) pairs; NaN values (histogram_quantile of nothing) are dropped."""
        request = urllib.request.Request(
            f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", headers=self._headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise PrometheusError(f"Prometheus at {self.url} answered {error.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {reason}") from None
        except json.JSONDecodeError:
            raise PrometheusError(f"{self.url} did not answer with Prometheus' JSON: is it a Prometheus?") from None
        data = body.get("data") or {}
        if body.get("status") != "success" or data.get("resultType") != "vector":
            raise PrometheusError(f"Prometheus refused {expr!r}: {body.get('error', body)}")
        samples = []
        for sample in data["result"]:
            value = float(sample["value"][1])
            if not math.isnan(value):
                samples.append((sample["metric"], value))
        return samples


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _matchers(model: str, versions: tuple[str, str], namespace: str | None) -> str:
    alternatives = "|".join(re.escape(version) for version in versions)
    matchers = [f'model="{_label_value(model)}"', f'model_version=~"{_label_value(alternatives)}"']
    if namespace:
        matchers.append(f'namespace="{_label_value(namespace)}"')
    return ",".join(matchers)


def _by_version(client: PrometheusClient, template: str, match: str, window: str) -> dict[str, float]:
    expr = template.format(by="model_version", match=match, window=window)
    return {labels.get("model_version", ""): value for labels, value in client.query(expr)}


def analyze(
    client: PrometheusClient,
    *,
    stable_version: str,
    canary_version: str,
    window: str = "10m",
    model: str = "image-search",
    namespace: str | None = None,
    thresholds: Thresholds | None = None,
) -> Analysis:
    """One check of the canary against stable over the last `window`."""
    thresholds = thresholds or Thresholds()
    if stable_version == canary_version:
        raise ValueError(f"--stable-version and --canary-version are both {stable_version!r}; compare two versions")
    window_s = parse_duration(window)
    match = _matchers(model, (stable_version, canary_version), namespace)

    def read(template: str) -> tuple[float | None, float | None]:
        values = _by_version(client, template, match, window)
        return values.get(stable_version), values.get(canary_version)

    def counts(template: str) -> tuple[float, float]:
        stable, canary = read(template)
        return (stable or 0.0) * window_s, (canary or 0.0) * window_s

    requests = counts(REQUESTS_RATE)
    queries = counts(TOP1_QUERIES_RATE)
    error_ratio = read(ERROR_RATIO)
    p99 = read(P99_LATENCY)
    top1 = read(TOP1_MEDIAN)

    enough_requests = min(requests) >= thresholds.min_requests
    enough_queries = min(queries) >= thresholds.min_requests
    checks = [
        Check(
            "requests",
            requests[0],
            requests[1],
            f">= {thresholds.min_requests}",
            Result.PASS if enough_requests else Result.NO_DATA,
            "count",
        ),
        _error_ratio_check(error_ratio, thresholds, enough_requests),
        _p99_check(p99, thresholds, enough_requests),
        Check(
            "top-1 queries",
            queries[0],
            queries[1],
            f">= {thresholds.min_requests}",
            Result.PASS if enough_queries else Result.NO_DATA,
            "count",
        ),
        _top1_check(top1, thresholds, enough_queries),
    ]
    return Analysis(stable_version, canary_version, window, tuple(checks), *_decide(checks, window))


def _error_ratio_check(values: tuple[float | None, float | None], thresholds: Thresholds, enough: bool) -> Check:
    stable, canary = values
    limit = None if stable is None else min(stable + thresholds.max_error_ratio_increase, 1.0)
    shown = "-" if limit is None else f"<= {limit * 100:.2f}%"
    return Check("error ratio", stable, canary, shown, _judge(enough, canary, limit, above_is_worse=True), "%")


def _p99_check(values: tuple[float | None, float | None], thresholds: Thresholds, enough: bool) -> Check:
    stable, canary = values
    limit = None if stable is None else max(stable * thresholds.max_p99_ratio, stable + thresholds.p99_slack_s)
    shown = "-" if limit is None else f"<= {limit * 1000:.0f} ms"
    return Check("p99 latency", stable, canary, shown, _judge(enough, canary, limit, above_is_worse=True), "ms")


def _top1_check(values: tuple[float | None, float | None], thresholds: Thresholds, enough: bool) -> Check:
    stable, canary = values
    limit = None if stable is None else stable - thresholds.max_top1_drop
    shown = "-" if limit is None else f">= {limit:.3f}"
    return Check("median top-1 similarity", stable, canary, shown, _judge(enough, canary, limit, above_is_worse=False))


def _judge(enough: bool, canary: float | None, limit: float | None, *, above_is_worse: bool) -> Result:
    if not enough or canary is None or limit is None:
        return Result.NO_DATA
    worse = canary > limit if above_is_worse else canary < limit
    return Result.FAIL if worse else Result.PASS


def _decide(checks: list[Check], window: str) -> tuple[Decision, str]:
    # A failure outranks missing data: a canary already worse on one measure is rolled back without waiting.
    failed = [check.measure for check in checks if check.result is Result.FAIL]
    if failed:
        return Decision.ROLL_BACK, f"canary worse than stable on {', '.join(failed)} over the last {window}"
    missing = [check.measure for check in checks if check.result is Result.NO_DATA]
    if missing:
        return Decision.NOT_ENOUGH_DATA, f"not enough data yet for {', '.join(missing)} over the last {window}"
    return Decision.PROMOTE, f"canary no worse than stable on every measure over the last {window}"


def analyze_repeatedly(
    check: Callable[[], Analysis],
    *,
    checks: int = 1,
    interval_s: float = 60.0,
    failure_limit: int = 0,
    deadline_s: float = 0.0,
    report: Callable[[Analysis], None] = lambda analysis: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Analysis:
    """Run `check` every `interval_s` until `checks` checks passed (promote) or more than `failure_limit` failed
    (roll back), as Argo Rollouts' count and failureLimit do; a check without enough data counts neither way. No
    check starts later than `deadline_s` after the first; the default of 0 makes it a single check. Undecided at the
    deadline, the result is "not enough data"."""
    if checks < 1:
        raise ValueError(f"--checks must be at least 1, got {checks}")
    if failure_limit < 0:
        raise ValueError(f"--failure-limit must not be negative, got {failure_limit}")
    if interval_s <= 0:
        raise ValueError(f"--interval must be longer than 0s, got {interval_s}")
    if deadline_s < 0:
        raise ValueError(f"--deadline must not be negative, got {deadline_s}")
    started = clock()
    passed = failed = 0
    while True:
        analysis = check()
        report(analysis)
        if analysis.decision is Decision.ROLL_BACK:
            failed += 1
            if failed > failure_limit:
                return analysis
        elif analysis.decision is Decision.PROMOTE:
            passed += 1
            if passed >= checks:
                return analysis
        if clock() + interval_s - started > deadline_s:
            if analysis.decision is Decision.NOT_ENOUGH_DATA and passed == failed == 0:
                return analysis
            return Analysis(
                analysis.stable_version,
                analysis.canary_version,
                analysis.window,
                analysis.checks,
                Decision.NOT_ENOUGH_DATA,
                f"{passed} of {checks} checks passed and {failed} failed (limit {failure_limit}) by the deadline",
            )
        sleep(interval_s)
