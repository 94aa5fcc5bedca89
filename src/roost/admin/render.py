"""Human-readable output of admin commands: tables, key-value blocks, durations, sizes.

Renderers are pure functions of a command's JSON result, so that they run in the client
(``roost ctl``) and never on the node. Results of several nodes (``--node``, ``--all``) are
rendered by the command's ``render_nodes`` (a :class:`Table`'s ``nodes``: one table, a node
column first), or else by :func:`sections`, one block per node.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as an aligned table; ``columns`` are (key, heading). Empty: ``(none)``."""
    if not rows:
        return "(none)"
    cells = [[heading for _, heading in columns]]
    cells += [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def pairs(items: Sequence[tuple[str, Any]]) -> str:
    """``label  value`` lines, labels aligned."""
    width = max((len(label) for label, _ in items), default=0)
    return "\n".join(f"{label:<{width}}  {cell(value)}" for label, value in items)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return " ".join(shown[:2]) or "0s"


def size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def generic(result: Any) -> str:
    """Output for a command without a renderer of its own."""
    if result is None:
        return "ok"
    if isinstance(result, str):
        return result
    if isinstance(result, Mapping):
        return pairs([(str(k), v) for k, v in result.items()])
    if isinstance(result, list) and result and all(isinstance(r, Mapping) for r in result):
        keys = list(dict.fromkeys(k for row in result for k in row))
        return table(result, [(k, k.upper()) for k in keys])
    if isinstance(result, list):
        return "\n".join(cell(item) for item in result) or "(none)"
    return cell(result)


def _identity(row: Mapping[str, Any]) -> Mapping[str, Any]:
    return row


def _as_rows(result: Any) -> list[Mapping[str, Any]]:
    return list(result) if isinstance(result, list) else [result]


@dataclass(frozen=True)
class Table:
    """A renderer for results that are rows: one node's, or several nodes' with a node column.

    ``rows`` turns a result into rows (a list as it is, anything else as one row); ``row``
    formats one row for display (durations, units).
    """

    columns: Sequence[tuple[str, str]]
    row: Callable[[Mapping[str, Any]], Mapping[str, Any]] = _identity
    rows: Callable[[Any], list[Mapping[str, Any]]] = _as_rows

    def __call__(self, result: Any) -> str:
        return table([self.row(r) for r in self.rows(result)], self.columns)

    def nodes(self, results: Mapping[str, Any]) -> str:
        rows = [
            {**self.row(r), "node": node}
            for node, result in sorted(results.items())
            for r in self.rows(result)
        ]
        return table(rows, [("node", "NODE"), *self.columns])


def sections(results: Mapping[str, Any], render: Callable[[Any], str]) -> str:
    """Each node's result rendered on its own, under the node's name."""
    blocks = [f"== {node} ==\n{render(result)}" for node, result in sorted(results.items())]
    return "\n\n".join(blocks)
