"""Presenting micro-benchmark results: plain-text tables for people, JSON for programs.

Tables follow erlperf's layout, so the numbers read the same way: ``||`` is the concurrency,
``QPS`` the mean throughput (operations per second), ``StdDev`` the standard deviation
*relative to the mean* (a percentage reads at a glance whatever the magnitude), ``Median``
and ``P99`` are of the samples, ``Time`` is the time per operation, ``Rel`` each target's
QPS as a percentage of the fastest. Rates are shortened to three significant digits with
k/M/G suffixes (powers of 1000); times get ns/us/ms/s. JSON keeps every figure unrounded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from roost.bench.results import CompareResult, RunResult, SqueezeResult

_RATE_SUFFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"))
_TIME_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns"))


def _significant(value: float) -> str:
    """Three significant digits, without switching to exponent notation below 1000."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_rate(per_second: float) -> str:
    for scale, suffix in _RATE_SUFFIXES:
        if per_second >= scale:
            return f"{_significant(per_second / scale)} {suffix}"
    return _significant(per_second)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    for scale, unit in _TIME_UNITS:
        if seconds >= scale:
            return f"{_significant(seconds / scale)} {unit}"
    return f"{_significant(seconds / 1e-9)} ns"


def format_percent(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align columns: the first to the left (names), the others to the right (numbers)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def _stddev_percent(result: RunResult) -> str:
    return format_percent(100.0 * result.stats.cv)


def _cv_notes(results: Sequence[RunResult]) -> list[str]:
    notes = []
    for result in results:
        if result.cv_reached is False:
            notes.append(
                f"note: {result.name} (concurrency {result.concurrency}) did not settle below "
                f"cv {result.cv_target} within {len(result.samples) + len(result.warmup_samples)}"
                f" samples; last cv {result.stats.cv:.3f}"
            )
    return notes


def run_table(comparison: CompareResult) -> str:
    """The continuous-mode report; the Rel column only appears for two targets or more."""
    relative = len(comparison.results) > 1
    headers = ["Code", "||", "Samples", "QPS", "StdDev", "Median", "P99", "Time"]
    if relative:
        headers.append("Rel")
    rows = []
    for result in comparison.results:
        summary = result.stats
        row = [
            result.name,
            str(result.concurrency),
            str(summary.count),
            format_rate(summary.mean),
            _stddev_percent(result),
            format_rate(summary.median),
            format_rate(summary.p99),
            format_duration(result.time_per_op),
        ]
        if relative:
            row.append(f"{comparison.relative(result):.0f}%")
        rows.append(row)
    return "\n".join([render(headers, rows), *_cv_notes(comparison.results)])


def squeeze_table(results: Sequence[SqueezeResult]) -> str:
    """Every level of every squeeze, the best level starred, then one verdict line each."""
    headers = ["Code", "||", "Samples", "QPS", "StdDev", "Time", "Best"]
    rows = []
    verdicts = []
    notes: list[str] = []
    for squeezed in results:
        for level in squeezed.levels:
            rows.append(
                [
                    squeezed.name,
                    str(level.concurrency),
                    str(level.stats.count),
                    format_rate(level.qps),
                    _stddev_percent(level),
                    format_duration(level.time_per_op),
                    "*" if level is squeezed.best else "",
                ]
            )
        verdicts.append(
            f"{squeezed.name}: best concurrency {squeezed.concurrency}, "
            f"{format_rate(squeezed.qps)} ops/s"
        )
        notes.extend(_cv_notes(squeezed.levels))
    return "\n".join([render(headers, rows), "", *verdicts, *notes])


def run_json(comparison: CompareResult) -> dict[str, Any]:
    return {"kind": "continuous", **comparison.to_dict()}


def squeeze_json(results: Sequence[SqueezeResult]) -> dict[str, Any]:
    return {"kind": "squeeze", "results": [squeezed.to_dict() for squeezed in results]}


def dumps(document: dict[str, Any]) -> str:
    # allow_nan=False: results turn infinities into null, so anything else is a bug to surface
    # rather than non-standard JSON ('Infinity') that other tools would reject.
    return json.dumps(document, indent=2, allow_nan=False)
