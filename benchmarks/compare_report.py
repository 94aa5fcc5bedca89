"""The report of ``benchmarks.compare``: one markdown table, ratios, footnotes, set-up, commands.

Pure functions of the measurements (tested in tests/bench/test_compare.py): nothing here starts
a server.
"""

from __future__ import annotations

import math
import re
import shlex
import statistics
import time
from dataclasses import dataclass, field

from benchmarks.compare_peer import Peer
from benchmarks.harness import LOAD_CORE, SERVER_CORE

LOWER = "lower"
HIGHER = "higher"
NEITHER = "-"
_FRAME = re.compile(r'^(Traceback \(most recent call last\)|File ".*", line \d+)')
NOTE_LIMIT = 400  # characters of an error kept in a footnote (the full text is in the JSON)


@dataclass(frozen=True)
class Plan:
    users: int
    runs: int
    idle_s: float
    clients: int
    chat_s: float
    rate: int
    presence_clients: int
    roster: int
    presence_s: float


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    better: str
    digits: int


@dataclass
class Column:
    peer: Peer
    version: str = ""
    failure: str | None = None  # the server could not be installed or set up at all
    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    remarks: dict[str, str] = field(default_factory=dict)  # row key -> how it differed


def rows(plan: Plan) -> list[Row]:
    return [
        Row("idle_kib", f"idle memory per session, {plan.users:,} sessions (KiB)", LOWER, 1),
        Row("login_per_s", "logins/s while those sessions log in", HIGHER, 0),
        Row(
            "closed_per_s",
            f"1:1 chat delivered/s, closed loop, {plan.clients:,} users, {plan.chat_s:g} s",
            HIGHER,
            0,
        ),
        Row("closed_cpu", "server CPU-seconds per 1,000 messages (closed loop)", LOWER, 3),
        Row(
            "closed_gen",
            "generator CPU % during the closed loop (near 100: it is the limit)",
            NEITHER,
            0,
        ),
        Row("open_p50", f"latency at {plan.rate:,} msg/s, p50 (ms)", LOWER, 2),
        Row("open_p99", f"latency at {plan.rate:,} msg/s, p99 (ms)", LOWER, 2),
        Row("open_rate", f"rate achieved of {plan.rate:,} msg/s", HIGHER, 0),
        Row(
            "presence_per_s",
            f"presence notifications/s, {plan.presence_clients:,} users x {plan.roster} "
            "contacts, closed loop",
            HIGHER,
            0,
        ),
        Row("presence_cpu", "server CPU-seconds per 1,000 notifications", LOWER, 3),
        Row("presence_gen", "generator CPU % during the presence run", NEITHER, 0),
        Row("lost", "messages + notifications lost, all runs", LOWER, 0),
    ]


def median(column: Column, key: str) -> float | None:
    """The median of a measurement's runs (``lost``: the sum); None if none succeeded."""
    values = [v for v in column.values.get(key, []) if not math.isnan(v)]
    if not values:
        return None
    if key == "lost":
        return float(sum(values))
    return float(statistics.median(values))


def ratio(row: Row, base: float | None, other: float | None) -> str:
    """``base ÷ other`` as ``1.23x``; ``-`` where a ratio means nothing."""
    if row.better == NEITHER or row.key == "lost" or base is None or other is None:
        return "-"
    if not (base > 0 and other > 0) or math.isinf(base) or math.isinf(other):
        return "-"
    return f"{base / other:.2f}x"


def fmt(value: float, digits: int) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _digits(value: float) -> int:
    return 3 if abs(value) < 10 else 1 if abs(value) < 1000 else 0


def one_line(text: str, limit: int = NOTE_LIMIT) -> str:
    """An error for a footnote: the traceback's last line, whitespace collapsed, cut."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > 2 and any(_FRAME.match(line) for line in lines[1:]):
        lines = [lines[0], lines[-1]]  # what failed, and the exception that ended it
    joined = re.sub(r"\s+", " ", " ".join(lines))
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def comparisons(columns: list[Column]) -> list[tuple[str, Column, Column]]:
    """(heading, roost's column, other column): each peer against roost over the same
    transport (the STARTTLS column for a server that requires TLS, if it was measured)."""
    by_name = {c.peer.name: c for c in columns}
    pairs: list[tuple[str, Column, Column]] = []
    for column in columns:
        if column.peer.name.startswith("roost"):
            continue
        base = by_name.get("roost-tls") if column.peer.tls else None
        base = base or by_name.get("roost")
        if base is not None:
            pairs.append((f"{base.peer.label} ÷ {column.peer.label}", base, column))
    return pairs


def table(plan: Plan, columns: list[Column], notes: list[str]) -> list[str]:
    """The markdown table; footnote texts are appended to ``notes``."""

    def footnote(text: str) -> str:
        text = one_line(text)
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    pairs = comparisons(columns)
    header = ["measurement", "better", *(c.peer.label for c in columns), *(p[0] for p in pairs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows(plan):
        cells = [row.label, row.better]
        for column in columns:
            value = median(column, row.key)
            errors = column.errors.get(row.key, [])
            if column.failure:
                cells.append("failed " + footnote(f"{column.peer.label}: {column.failure}"))
            elif value is None:
                why = errors[0] if errors else "not measured"
                cells.append("n/a " + footnote(f"{column.peer.label}: {why}"))
            else:
                text = fmt(value, row.digits)
                if row.key in column.remarks:
                    text += " " + footnote(f"{column.peer.label}: {column.remarks[row.key]}")
                if errors and row.key != "lost":
                    runs = len(column.values.get(row.key, []))
                    text += " " + footnote(
                        f"{column.peer.label}, {row.label}: median of {runs} run(s); "
                        f"{len(errors)} failed: {errors[0]}"
                    )
                cells.append(text)
        for _, base, other in pairs:
            cells.append(ratio(row, median(base, row.key), median(other, row.key)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(
    plan: Plan,
    columns: list[Column],
    argv: list[str],
    load_commands: dict[str, str],
    *,
    pythonpath: str | None = None,
    when: str | None = None,
) -> str:
    notes: list[str] = []
    lines = table(plan, columns, notes)
    command = shlex.join(["python", "-m", "benchmarks.compare", *argv])
    out = [
        f"## roost compared ({when or time.strftime('%Y-%m-%d')})",
        "",
        f"`{command}`",
        "",
        f"Medians of {plan.runs} run(s), each on a freshly started server pinned to core "
        f"{SERVER_CORE}, the generator pinned to core {LOAD_CORE}. Ratios are roost ÷ the "
        "other server: above 1 is better for roost where higher is better, below 1 where "
        "lower is better.",
        "",
        *lines,
        "",
    ]
    if notes:
        out += [f"[{i}] {text}" for i, text in enumerate(notes, 1)] + [""]
    out += ["### Versions", ""]
    out += [f"* {c.peer.label}: {c.version or 'unknown'}" for c in columns]
    out += ["", "### Set-up: what each server runs and what was turned off", ""]
    for column in columns:
        for note in column.peer.notes:
            out.append(f"* {column.peer.label}: {note}")
    out += ["", "### Commands", "", "Servers (`PORT` a free loopback port each start):", ""]
    for column in columns:
        for started in column.peer.commands:
            out.append(f"    {started}")
    if pythonpath:
        out += ["", f"Server and generator commands run with PYTHONPATH={pythonpath}."]
    out += [
        "",
        "Load generator (the first server's command for each step, then each server's "
        "own where it differs):",
        "",
    ]
    for label, shown in load_commands.items():
        out.append(f"    # {label}")
        out.append(f"    {shown}")
    out += ["", "### Every run", ""]
    for column in columns:
        parts = [
            f"{key} " + ", ".join(fmt(v, _digits(v)) for v in values)
            for key, values in column.values.items()
        ]
        out.append(f"* {column.peer.label}: " + ("; ".join(parts) or "no results"))
    return "\n".join(out)
