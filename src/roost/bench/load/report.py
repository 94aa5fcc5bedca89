"""Rendering a :class:`LoadResult` for people (a few aligned lines) or programs (JSON)."""

from __future__ import annotations

import json
from typing import Any

from roost.bench.load.result import LoadResult


def to_json(result: LoadResult) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=False, allow_nan=False)


def to_text(result: LoadResult) -> str:
    params = result.parameters
    lines = [_headline(result, params)]
    clients = result.clients
    if clients:
        line = (
            f"{clients['online']}/{clients['requested']} online; "
            f"login {result.durations.get('login', 0):.2f} s "
            f"({clients['login_per_s']:,.1f}/s); {clients['failed']} failed"
        )
        registered = clients.get("registered")
        if registered is not None:
            line += f"; registered {registered['created']} new, {registered['existing']} existing"
        lines.append(_row("clients", line))
    traffic = result.traffic
    if result.scenario == "chat" and traffic:
        lines.append(
            _row(
                "messages",
                f"sent {traffic['sent']:,}, delivered {traffic['delivered']:,} "
                f"({traffic['delivered_per_s']:,.1f}/s), lost {traffic['lost']:,}, "
                f"duplicates {traffic['duplicates']:,}, errors {traffic['errors']:,}",
            )
        )
    if result.scenario == "presence" and traffic:
        lines.append(
            _row(
                "presence",
                f"{traffic['changes']:,} changes to {traffic['roster_size']} contacts each: "
                f"{traffic['delivered']:,} of {traffic['expected']:,} notifications "
                f"({traffic['delivered_per_s']:,.1f}/s), lost {traffic['lost']:,}",
            )
        )
    if result.latency is not None:
        lines.append(_row("latency", _percentiles(result.latency)))
    fanout = traffic.get("fanout_latency")
    if fanout:
        lines.append(_row("fan-out", _percentiles(fanout) + " (until the last contact)"))
    pacer = traffic.get("pacer")
    if pacer:
        lines.append(
            _row(
                "pacer",
                f"target {pacer['target_rate']:,g}/s, achieved {pacer['achieved_rate']:,.1f}/s, "
                f"max lag {pacer['max_lag_ms']} ms",
            )
        )
    cpu = result.generator.get("cpu_share", {})
    if cpu:
        # A phase of a few milliseconds has no meaningful CPU share.
        shares = ", ".join(
            f"{phase} {share:.0%}"
            for phase, share in cpu.items()
            if phase == "total" or result.durations.get(phase, 0) >= 0.05
        )
        rss = result.generator.get("rss_bytes")
        tail = f"; RSS {_size(rss)}" if rss else ""
        lines.append(_row("generator", f"CPU (of one core): {shares}{tail}"))
    if result.server is not None:
        lines.append(_row("server", _server(result.server)))
    if result.durations:
        lines.append(
            _row("durations", ", ".join(f"{k} {v:.2f} s" for k, v in result.durations.items()))
        )
    if result.errors:
        listed = ", ".join(f"{reason} ({n})" for reason, n in result.errors.items())
        lines.append(_row("errors", listed))
    if not result.ok:
        lines.append(f"FAILED in phase {result.failed_phase}:")
        lines.extend(f"  - {problem}" for problem in result.problems)
    lines.extend(f"warning: {warning}" for warning in result.warnings)
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)


def _headline(result: LoadResult, params: dict[str, Any]) -> str:
    mode = ""
    if result.scenario != "idle":
        rate = params.get("rate")
        mode = (
            f", closed loop (window {params.get('window', 1)})"
            if rate is None
            else f", open loop at {rate:g}/s"
        )
    return (
        f"roost bench load: {result.scenario}{mode}, {params.get('clients')} clients, "
        f"{params.get('duration'):g} s against {result.target} over {result.transport}"
    )


def _row(label: str, text: str) -> str:
    return f"  {label:<10} {text}"


def _percentiles(summary: dict[str, float]) -> str:
    return (
        f"p50 {summary['p50_ms']:.3f} ms, p90 {summary['p90_ms']:.3f} ms, "
        f"p99 {summary['p99_ms']:.3f} ms, p99.9 {summary['p999_ms']:.3f} ms, "
        f"max {summary['max_ms']:.3f} ms ({int(summary['count']):,} samples)"
    )


def _server(server: dict[str, Any]) -> str:
    rss = server.get("rss")
    if not rss:
        return f"pid {server['pid']}: RSS unavailable"
    parts = [
        f"{label} {_size(rss[key])}"
        for label, key in (
            ("before", "before_bytes"),
            ("after login", "after_login_bytes"),
            ("at end", "end_bytes"),
        )
        if rss.get(key) is not None
    ]
    text = f"pid {server['pid']} RSS " + ", ".join(parts)
    if rss.get("per_session_bytes") is not None:
        text += (
            f"; growth {_size(rss['delta_bytes'])}, {_size(rss['per_session_bytes'])} per session"
        )
    return text


def _size(value: int | float | None) -> str:
    if value is None:
        return "?"
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{value}"  # pragma: no cover
