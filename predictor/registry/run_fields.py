"""What an evaluation run records, read generically from the JSON report and model.json, so that a new field is
tracked without a change here. Pure functions with no MLflow import: the rules are testable without the extra.

The report:
- metrics are its measures: the fractional numbers (JSON floats) of its `scores` section when it has one, else of the
  whole report, named by dotted path (`precision_at_5`, `near_duplicate.recall_at_1`);
- a mapping keyed by the eval set's categories is a per-category measure. It must name every category.
  `precision_at_k: {"brick": 0.9}` gives `precision_at_k.brick`, `precision_at_5_by_category: {"brick": 0.9}` gives
  `precision_at_5.brick`, and `by_category: {"brick": {"p_at_5": 0.9}}` gives `p_at_5.brick`;
- everything else (text, whole numbers such as k or counts, settings outside `scores`) becomes a `report.` param.
model.json becomes `model.` params: identity, architecture, preprocessing, precision, projection, whatever it holds.
"""

import json
import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# MLflow's own rules (mlflow/utils/validation.py): names of these characters, at most 250 long, values at most 6000.
_NAME = re.compile(r"^[/\w.\- :]+$")
MAX_NAME_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
SCORES_SECTION = "scores"
BY_CATEGORY_SUFFIX = "_by_category"


class UntrackableReport(ValueError):
    """The report holds something MLflow cannot store, or that would make runs incomparable."""


@dataclass
class ReportFields:
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def split_report(report: Mapping, categories: Iterable[str]) -> ReportFields:
    """The report's metrics and params; refuses NaN, infinities, missing values and missing categories."""
    fields = ReportFields()
    categories = frozenset(categories)
    scores = report.get(SCORES_SECTION)
    if isinstance(scores, Mapping):
        _walk(scores, (), categories, fields, section=(SCORES_SECTION,))
        rest = {key: value for key, value in report.items() if key != SCORES_SECTION}
        fields.params.update(flat_params("report", rest))
    else:
        _walk(report, (), categories, fields, section=())
    return fields


def _walk(node: Mapping, path: tuple[str, ...], categories: frozenset, fields: ReportFields, section: tuple) -> None:
    """`path` names metrics; `section` + `path` is where a field sits in the report, for params and messages."""
    for key, value in node.items():
        here = (*path, str(key))
        if isinstance(value, Mapping) and value and categories and set(value) <= categories:
            _per_category(value, here, categories, fields.metrics, section)
        elif isinstance(value, Mapping):
            _walk(value, here, categories, fields, section)
        elif value is None:
            raise UntrackableReport(f"report field {'.'.join(section + here)!r} has no value; nothing was logged")
        elif isinstance(value, float):
            _put_metric(fields.metrics, ".".join(here), value)
        else:
            fields.params.update(flat_params(".".join(("report", *section, *path)), {key: value}))


def _per_category(by_category: Mapping, path: tuple[str, ...], categories: frozenset, out: dict, section) -> None:
    missing = sorted(categories - set(by_category))
    if missing:
        raise UntrackableReport(
            f"report field {'.'.join(section + path)!r} has no value for categor{'y' if len(missing) == 1 else 'ies'} "
            f"{', '.join(map(repr, missing))} of the eval set (too few images?); runs that lack a category cannot be "
            "compared, so nothing was logged"
        )
    metric = path[-1].removesuffix(BY_CATEGORY_SUFFIX)
    for category, value in by_category.items():
        if isinstance(value, Mapping):
            # {"brick": {"p_at_5": 0.9}}: the measure's name leads, as in `p_at_5.brick`.
            for measure, number in value.items():
                _put_checked(out, (*path[:-1], str(measure), category), number)
        else:
            _put_checked(out, (*path[:-1], metric, category), value)


def _put_checked(out: dict[str, float], path: tuple[str, ...], value: object) -> None:
    name = ".".join(path)
    if value is None:
        raise UntrackableReport(f"report field {name!r} has no value; nothing was logged")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UntrackableReport(f"report field {name!r} is {value!r}, not a number; nothing was logged")
    _put_metric(out, name, float(value))


def _put_metric(out: dict[str, float], name: str, value: float) -> None:
    if not math.isfinite(value):
        raise UntrackableReport(
            f"metric {name!r} is {value}: an evaluation that produced it is broken, and a run holding it cannot be "
            "gated or compared; nothing was logged"
        )
    check_name(name, "metric")
    out[name] = value


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
