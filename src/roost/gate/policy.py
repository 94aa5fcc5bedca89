"""When a gate trips, and what it does then: one :class:`Policy` per gate.

Trip policies, each disabled by 0, are combined with "or": the first that fires trips the
partition, and the trip keeps its name and numbers.

``consecutive_failures``
    that many failed calls in a row. Fast on a quiet server, where a rate has too few calls to
    mean anything (pybreaker's ``fail_max``, Envoy's ``consecutive_5xx``; both default to 5).
``failure_rate`` over ``window`` seconds, once ``minimum_calls`` were made in it
    robust under load, where a few failures in a row are noise. The window is time-based, so
    that old outcomes leave it even when traffic stops (resilience4j's ``TIME_BASED`` window:
    buckets, subtract on evict).
``slow_call_rate``, with ``slow_call_threshold``
    a call that succeeds after ``slow_call_threshold`` seconds or more is *slow*. A stalling
    dependency shows as slowness long before it shows as errors, and callers waiting on it
    pile up: tripping on slowness sheds that load.

``max_concurrent`` is the bulkhead: calls in flight per partition beyond it are refused at
once (:class:`~roost.gate.errors.GateFull`) rather than queued; it never trips the gate.
``call_timeout`` bounds each call: a call still running then is cancelled and counts as a
failure, so that a dependency that hangs, rather than fails, still trips its gate (a hung call
reports no outcome at all, and would otherwise also keep a half-open partition waiting
forever, resilience4j #903).

Once open, a partition refuses calls for ``open_for`` seconds, then lets ``half_open_calls``
trial calls through: it closes when all of them succeed (fast), and opens again at the first
that fails or is slow.

``max_open_share`` is the safety valve, after Envoy's ``max_ejection_percent``: at most this
share of a gate's partitions may be open at once, and a trip beyond it is suppressed (counted,
not applied). One partition may always open, as Envoy always ejects at least one host: a gate
with a single partition (one database) must still be able to protect it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Policy:
    """Thresholds of one gate (every partition of it). See the module docstring."""

    consecutive_failures: int = 5
    failure_rate: float = 0.5
    slow_call_rate: float = 0.8
    slow_call_threshold: float = 2.0
    minimum_calls: int = 20
    window: float = 10.0
    open_for: float = 5.0
    half_open_calls: int = 3
    max_concurrent: int = 0
    call_timeout: float = 0.0
    max_open_share: float = 0.5

    def __post_init__(self) -> None:
        problems = []
        if self.consecutive_failures < 0:
            problems.append("consecutive_failures must be 0 (off) or more")
        for name in ("failure_rate", "slow_call_rate", "max_open_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be between 0 and 1, not {value}")
        if self.slow_call_threshold < 0 or self.call_timeout < 0:
            problems.append("slow_call_threshold and call_timeout must be 0 (off) or more")
        if self.minimum_calls < 1:
            problems.append("minimum_calls must be at least 1")
        if not self.window > 0 or not self.open_for > 0:
            problems.append("window and open_for must be positive")
        if self.half_open_calls < 1:
            problems.append("half_open_calls must be at least 1")
        if self.max_concurrent < 0:
            problems.append("max_concurrent must be 0 (no limit) or more")
        if problems:
            raise ValueError("; ".join(problems))

    def open_limit(self, partitions: int) -> int:
        """How many of ``partitions`` may be open at once (never fewer than one)."""
        return max(1, math.floor(self.max_open_share * partitions + 1e-9))
