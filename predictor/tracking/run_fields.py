"""What an evaluation run records, read generically from the JSON report and model.json so that new fields are
tracked without code here. Pure functions: no MLflow import, so the rules are testable without the extra.

- metrics: every number in the report, by its dotted path (`mean_precision_at_k`, `precision_at_k.brick`). A mapping
  keyed by the eval set's categories is a per-category metric: `{"brick": 0.9}` under `precision_at_k` becomes
  `precision_at_k.brick`, and `{"brick": {"p_at_5": 0.9}}` becomes `p_at_5.brick`. It must name every category.
- params: every scalar of model.json under `model.` (identity, architecture, preprocessing, precision, projection:
  whatever the package holds), strings of the report under `report.`, and the eval options under `eval.`.
"""

import json
import math
import posixpath
import re
from collections.abc import Iterable, Mapping

# MLflow's own rules (mlflow/utils/validation.py): names of these characters, at most 250 long, values at most 6000.
_NAME = re.compile(r"^[/\w.\- :]+$")
MAX_NAME_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000


class UntrackableReport(ValueError):
    """The report holds something MLflow cannot store, or that would make runs incomparable."""


def report_metrics(report: Mapping, categories: Iterable[str]) -> dict[str, float]:
    """The report's numbers as MLflow metrics; refuses NaN, infinities, missing values and missing categories."""
    metrics: dict[str, float] = {}
    _collect_metrics(report, (), frozenset(categories), metrics)
    return metrics


def _collect_metrics(node: Mapping, path: tuple[str, ...], categories: frozenset[str], out: dict[str, float]) -> None:
    for key, value in node.items():
        here = (*path, str(key))
        if isinstance(value, Mapping) and value and categories and set(value) <= categories:
            _collect_per_category(value, here, categories, out)
        elif isinstance(value, Mapping):
            _collect_metrics(value, here, categories, out)
        elif value is None:
            raise UntrackableReport(f"report field {'.'.join(here)!r} has no value; nothing was logged")
        elif _is_number(value):
            _put(out, ".".join(here), value)


def _collect_per_category(by_category: Mapping, path: tuple[str, ...], categories: frozenset[str], out: dict) -> None:
    missing = sorted(categories - set(by_category))
    if missing:
        raise UntrackableReport(
            f"report field {'.'.join(path)!r} has no value for categor{'y' if len(missing) == 1 else 'ies'} "
            f"{', '.join(map(repr, missing))} of the eval set (too few images?); runs that lack a category cannot be "
            "compared, so nothing was logged"
        )
    for category, value in by_category.items():
        if isinstance(value, Mapping):
            # {"brick": {"p_at_5": 0.9}}: the metric's name leads, as in `p_at_5.brick`.
            for metric, number in value.items():
                _put_checked(out, (*path[:-1], str(metric), category), number)
        else:
            _put_checked(out, (*path, category), value)


def _put_checked(out: dict[str, float], path: tuple[str, ...], value: object) -> None:
    name = ".".join(path)
    if value is None:
        raise UntrackableReport(f"report field {name!r} has no value; nothing was logged")
    if not _is_number(value):
        raise UntrackableReport(f"report field {name!r} is {value!r}, not a number; nothing was logged")
    _put(out, name, value)


def _put(out: dict[str, float], name: str, value: float) -> None:
    if not math.isfinite(value):
        raise UntrackableReport(
            f"metric {name!r} is {value}: an evaluation that produced it is broken, and a run holding it cannot be "
            "gated or compared; nothing was logged"
        )
    check_name(name, "metric")
    out[name] = float(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_name(name: str, kind: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise UntrackableReport(f"{kind} name {name[:60]!r}… is longer than MLflow's {MAX_NAME_LENGTH} characters")
    if not _NAME.match(name) or posixpath.normpath(name) != name:
        raise UntrackableReport(
            f"{kind} name {name!r} is not one MLflow accepts: use letters, digits, '_', '-', '.', ' ', ':' and '/' "
            "(rename the category folder if the name comes from one)"
        )


def flat_params(prefix: str, node: Mapping) -> dict[str, str]:
    """Scalars as they are, lists as compact JSON, nested objects by dotted path; `None` is left out."""
    params: dict[str, str] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            params.update(flat_params(name, value))
            continue
        if value is None:
            continue
        text = json.dumps(value, separators=(",", ":")) if isinstance(value, list | tuple) else str(value)
        check_name(name, "param")
        params[name] = text if len(text) <= MAX_PARAM_VALUE_LENGTH else text[: MAX_PARAM_VALUE_LENGTH - 1] + "…"
    return params


def report_params(report: Mapping) -> dict[str, str]:
    """The report's text fields (the model it scored, say); its numbers are metrics."""
    return {name: value for name, value in _strings(report, ("report",))}


def _strings(node: Mapping, path: tuple[str, ...]) -> Iterable[tuple[str, str]]:
    for key, value in node.items():
        if isinstance(value, Mapping):
            yield from _strings(value, (*path, str(key)))
        elif isinstance(value, str):
            name = ".".join((*path, str(key)))
            check_name(name, "param")
            yield name, value[:MAX_PARAM_VALUE_LENGTH]
