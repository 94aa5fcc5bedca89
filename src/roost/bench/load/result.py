"""The outcome of a load run: :class:`LoadResult`, plain data with ``to_dict()`` for JSON.

A result exists even when the run failed: whatever was measured before the failure is kept,
``ok`` is False, ``failed_phase`` names the first phase that failed (``connect``, ``tls``,
``stream``, ``auth``, ``bind``, ``session``, ``register``, ``subscribe``, ``run``) and
``problems`` says what happened in sentences. Counts of failures and errors are keyed by
reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class LoadResult:
    scenario: str
    target: str
    transport: str
    parameters: dict[str, Any]
    ok: bool = True
    failed_phase: str | None = None
    problems: list[str] = field(default_factory=list)
    interrupted: bool = False
    durations: dict[str, float] = field(default_factory=dict)  # seconds, by phase
    clients: dict[str, Any] = field(default_factory=dict)  # requested, online, login rate...
    failures: dict[str, dict[str, int]] = field(default_factory=dict)  # phase -> reason -> n
    errors: dict[str, int] = field(default_factory=dict)  # reason -> n, while running
    traffic: dict[str, Any] = field(default_factory=dict)  # the scenario's counts and rates
    latency: dict[str, float] | None = None  # ms percentiles (chat: per message)
    generator: dict[str, Any] = field(default_factory=dict)  # CPU share by phase, RSS
    server: dict[str, Any] | None = None  # RSS when server_pid was given
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 if everything worked, 1 otherwise (the command line's exit status)."""
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "target": self.target,
            "transport": self.transport,
            "ok": self.ok,
            "failed_phase": self.failed_phase,
            "problems": list(self.problems),
            "interrupted": self.interrupted,
            "parameters": dict(self.parameters),
            "durations": dict(self.durations),
            "clients": dict(self.clients),
            "failures": {phase: dict(reasons) for phase, reasons in self.failures.items()},
            "errors": dict(self.errors),
            "traffic": dict(self.traffic),
            "latency": dict(self.latency) if self.latency is not None else None,
            "generator": dict(self.generator),
            "server": dict(self.server) if self.server is not None else None,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }
