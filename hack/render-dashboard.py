#!/usr/bin/env python3
"""Render the Grafana dashboard's panels to a PNG from a Prometheus, with matplotlib, where no Grafana is at hand.

Every panel runs its own PromQL (template variables substituted) through ``/api/v1/query_range`` and is drawn where
the dashboard's ``gridPos`` puts it: time series as lines, stats as their last value, the heatmap and the table in
their own shapes. The documentation's dashboard picture is made this way by ``tests/e2e/test_prometheus.py`` against
the test's Prometheus; against a cluster, port-forward Prometheus and run for example:

    hack/render-dashboard.py --prometheus http://localhost:9090 --namespace image-search --model image-search \
        --model-version imagenet-1 --minutes 60 --out dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402 - the backend must be chosen before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

DEFAULT_DASHBOARD = Path(__file__).resolve().parents[1] / "monitoring" / "dashboards" / "image-search.json"

# Grafana's dark theme, so the picture reads like the dashboard an operator will open.
BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
GRID = "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d"]
COLOURS = {"green": "#73bf69", "red": "#f2495c", "yellow": "#fade2a", "orange": "#ff9830", "blue": "#8ab8ff"}
# Inches per dashboard grid unit: Grafana's grid is 24 columns wide and 30 px per row.
COLUMN_IN = 0.8
ROW_IN = 0.36


class PrometheusSource:
    """Reads from Prometheus's HTTP API."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=self.timeout_s) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {path} {params}: {body}")
        return body["data"]

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict]:
        return self._get("query_range", {"query": expr, "start": start, "end": end, "step": step_s})["result"]


def substitute(expr: str, variables: dict[str, str], rate_interval: str) -> str:
    expr = expr.replace("$__rate_interval", rate_interval)
    # Longest names first: $model must not eat the start of $model_version.
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    return expr


def legend(fmt: str, labels: dict[str, str], fallback: str) -> str:
    if not fmt:
        return fallback
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda match: labels.get(match.group(1), ""), fmt).strip() or fallback


def format_value(value: float, unit: str | None) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        if value == 0:
            return "0 s"
        if abs(value) < 1e-3:
            return f"{value * 1e6:.0f} µs"
        if abs(value) < 1:
            return f"{value * 1e3:.1f} ms"
        return f"{value:.2f} s"
    if unit == "bytes":
        for suffix, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} B"
    suffix = {"reqps": " req/s", "ops": " /s"}.get(unit or "", "")
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2g}{suffix}"
    if float(value).is_integer():
        return f"{value:.0f}{suffix}"
    return f"{value:.2f}{suffix}"


def _threshold_lines(panel: dict) -> list[tuple[float, str]]:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off") == "off":
        return []
    steps = defaults.get("thresholds", {}).get("steps", [])
    return [(step["value"], COLOURS.get(step["color"], step["color"])) for step in steps if step["value"] is not None]


def _stat_colour(panel: dict, value: float) -> str:
    colour = COLOURS["green"]
    for step in panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            colour = COLOURS.get(step["color"], step["color"])
    return colour


def _style(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.tick_params(colors=TEXT, labelsize=7)
    ax.set_title(title, color=TEXT, fontsize=9, loc="left", fontweight="bold")


def _no_data(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes, fontsize=10)


def _points(series: dict) -> tuple[list[datetime], list[float]]:
    times = [datetime.fromtimestamp(float(t), UTC) for t, _ in series["values"]]
    return times, [float(v) for _, v in series["values"]]


def _draw_timeseries(ax: Axes, panel: dict, results: Sequence[tuple[dict, list[dict]]]) -> bool:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    lines = 0
    for target, result in results:
        for series in result:
            times, values = _points(series)
            label = legend(target.get("legendFormat", ""), series["metric"], target["refId"])
            ax.plot(times, values, color=PALETTE[lines % len(PALETTE)], linewidth=1.2, label=label)
            lines += 1
    if not lines:
        _no_data(ax)
        return False
    for value, colour in _threshold_lines(panel):
        ax.axhline(value, color=colour, linestyle="--", linewidth=0.8)
    ax.grid(color=GRID, linewidth=0.5)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=4))
    ax.yaxis.set_major_formatter(lambda value, _: format_value(value, unit))
    ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
    ax.legend(
        fontsize=6, loc="upper left", facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, ncol=2 if lines > 4 else 1
    )
    return True


def _draw_stat(ax: Axes, panel: dict, results: Sequence[tuple[dict, list[dict]]]) -> bool:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    ax.set_xticks([])
    ax.set_yticks([])
    shown = []
    for target, result in results:
        for series in result:
            values = [v for v in _points(series)[1] if not math.isnan(v)]
            if values:
                shown.append((legend(target.get("legendFormat", ""), series["metric"], ""), values))
    if not shown:
        _no_data(ax)
        return False
    for i, (label, values) in enumerate(shown):
        x = (i + 0.5) / len(shown)
        colour = _stat_colour(panel, values[-1])
        text = format_value(values[-1], unit)
        ax.text(x, 0.5, text, color=colour, ha="center", va="center", transform=ax.transAxes, fontsize=18)
        if label:
            ax.text(x, 0.15, label, color=TEXT, ha="center", va="center", transform=ax.transAxes, fontsize=7)
    return True


def _draw_heatmap(ax: Axes, results: Sequence[tuple[dict, list[dict]]]) -> bool:
    buckets: dict[float, list[float]] = {}
    times: list[datetime] = []
    for _, result in results:
        for series in result:
            le = float(series["metric"].get("le", "nan"))
            times, values = _points(series)
            buckets[le] = values
    if not buckets:
        _no_data(ax)
        return False
    bounds = sorted(buckets)
    # Prometheus buckets are cumulative; the heatmap shows each bucket's own count.
    rows = []
    previous = [0.0] * len(times)
    for bound in bounds:
        row = [max(0.0, value - below) for value, below in zip(buckets[bound], previous, strict=True)]
        rows.append(row)
        previous = buckets[bound]
    labels = ["+Inf" if math.isinf(bound) else f"{bound:g}" for bound in bounds]
    start, end = mdates.date2num(times[0]), mdates.date2num(times[-1])
    ax.imshow(rows, aspect="auto", origin="lower", cmap="inferno", extent=(start, end, -0.5, len(bounds) - 0.5))
    ax.set_yticks(range(len(bounds)))
    ax.set_yticklabels(labels, fontsize=6)
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=4))
    return True


def _draw_table(ax: Axes, results: Sequence[tuple[dict, list[dict]]], by: str = "model_version") -> bool:
    ax.set_xticks([])
    ax.set_yticks([])
    columns = [target.get("legendFormat") or target["refId"] for target, _ in results]
    rows: dict[str, list[str]] = {}
    for index, (_, result) in enumerate(results):
        for series in result:
            values = [v for v in _points(series)[1] if not math.isnan(v)]
            key = series["metric"].get(by, "")
            rows.setdefault(key, [""] * len(columns))[index] = format_value(values[-1], None) if values else ""
    if not rows:
        _no_data(ax)
        return False
    table = ax.table(
        cellText=[[key, *cells] for key, cells in sorted(rows.items())],
        colLabels=[by, *columns],
        loc="center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for cell in table.get_celld().values():
        cell.set_facecolor(PANEL)
        cell.set_edgecolor(GRID)
        cell.get_text().set_color(TEXT)
    return True


def render(
    source: PrometheusSource,
    dashboard: dict,
    out: Path,
    *,
    variables: dict[str, str],
    start: float,
    end: float,
    rate_interval: str,
    points: int = 200,
) -> int:
    """Draw every panel of ``dashboard`` over ``[start, end]`` into ``out``; returns the number of panels drawn."""
    if end <= start:
        raise ValueError(f"end must be after start, got start={start} end={end}")
    step_s = max(1.0, (end - start) / points)
    layout = [panel for panel in dashboard["panels"]]
    columns = 24
    rows = max(panel["gridPos"]["y"] + panel["gridPos"]["h"] for panel in layout)
    header_in = 0.6
    width_in, height_in = columns * COLUMN_IN, rows * ROW_IN + header_in
    figure = plt.figure(figsize=(width_in, height_in), facecolor=BACKGROUND)
    stamp = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    selection = ", ".join(f"{name}={value}" for name, value in variables.items())
    figure.text(
        0.01,
        1 - 0.35 / height_in,
        f"{dashboard.get('title', 'Dashboard')}  ·  {selection}  ·  until {stamp}",
        color=TEXT,
        fontsize=13,
        va="center",
    )
    # Margins inside each grid cell leave room for tick labels and titles, as Grafana's panel padding does.
    pad_left, pad_right, pad_top, pad_bottom = 0.55, 0.1, 0.3, 0.3
    drawn = 0
    for panel in layout:
        grid = panel["gridPos"]
        left = grid["x"] * COLUMN_IN
        top = grid["y"] * ROW_IN + header_in
        width, height = grid["w"] * COLUMN_IN, grid["h"] * ROW_IN
        if panel["type"] == "row":
            figure.text(
                left / width_in + 0.005,
                1 - (top + height / 2) / height_in,
                panel["title"],
                color=TEXT,
                fontsize=11,
                fontweight="bold",
                va="center",
            )
            continue
        padded = panel["type"] in ("timeseries", "heatmap")
        rect = (
            (left + (pad_left if padded else 0.1)) / width_in,
            1 - (top + height - (pad_bottom if padded else 0.1)) / height_in,
            (width - (pad_left if padded else 0.1) - pad_right) / width_in,
            (height - pad_top - (pad_bottom if padded else 0.1)) / height_in,
        )
        ax = figure.add_axes(rect)
        _style(ax, panel["title"])
        results = [
            (target, source.query_range(substitute(target["expr"], variables, rate_interval), start, end, step_s))
            for target in panel.get("targets", [])
        ]
        if panel["type"] == "stat":
            _draw_stat(ax, panel, results)
        elif panel["type"] == "heatmap":
            _draw_heatmap(ax, results)
        elif panel["type"] == "table":
            _draw_table(ax, results)
        else:
            _draw_timeseries(ax, panel, results)
        drawn += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90, facecolor=BACKGROUND)
    plt.close(figure)
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://localhost:9090.")
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD, help="Grafana dashboard JSON.")
    parser.add_argument("--namespace", required=True, help="Value of the dashboard's namespace variable.")
    parser.add_argument("--model", default="image-search", help="Value of the dashboard's model variable.")
    parser.add_argument("--model-version", default=".*", help="Value (a regex) of the model_version variable.")
    parser.add_argument("--minutes", type=float, default=60.0, help="How far back the graphs reach.")
    parser.add_argument(
        "--rate-interval", default="2m", help="What $__rate_interval stands for (at least 4 scrape intervals)."
    )
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"), help="PNG file to write.")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be greater than 0")
    end = time.time()
    drawn = render(
        PrometheusSource(args.prometheus),
        json.loads(args.dashboard.read_text()),
        args.out,
        variables={"namespace": args.namespace, "model": args.model, "model_version": args.model_version},
        start=end - args.minutes * 60,
        end=end,
        rate_interval=args.rate_interval,
    )
    print(f"{args.out}: {drawn} panels")


if __name__ == "__main__":
    main()
