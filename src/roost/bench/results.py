"""Result records of micro-benchmark runs: plain frozen dataclasses with ``to_dict()`` for JSON.

Units: every sample and every throughput figure is in **operations per second** (each sample
is the counter delta divided by the interval's measured length; see ``roost.bench.micro``).
``time_per_op`` is in seconds. JSON has no infinity, so quantities that are infinite for a run
that completed nothing (time per op, cv) are ``null`` there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from roost.bench.stats import Summary, summarize


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class RunResult:
    """One target measured at one concurrency (continuous mode).

    ``samples`` are the measured samples the statistics are computed from. ``warmup_samples``
    were taken and discarded: the requested warm-up, and with a ``cv`` target, the samples
    that rolled out of the window before it became stable (the run was still settling when
    they were taken, which is what warm-up means).
    """

    name: str
    mode: str
    concurrency: int
    sample_duration: float
    samples: tuple[float, ...]
    warmup_samples: tuple[float, ...] = ()
    operations: int = 0
    cv_target: float | None = None
    cv_reached: bool | None = None

    @property
    def stats(self) -> Summary:
        return summarize(self.samples)

    @property
    def qps(self) -> float:
        """Throughput: the mean of the samples, operations per second."""
        return self.stats.mean

    @property
    def time_per_op(self) -> float:
        """Wall time one worker spends on one operation: ``concurrency / qps`` seconds."""
        qps = self.qps
        return self.concurrency / qps if qps > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "sample_duration": self.sample_duration,
            "qps": self.qps,
            "time_per_op": _finite(self.time_per_op),
            "stats": self.stats.to_dict(),
            "samples": list(self.samples),
            "warmup_samples": list(self.warmup_samples),
            "operations": self.operations,
            "cv_target": self.cv_target,
            "cv_reached": self.cv_reached,
        }


@dataclass(frozen=True, slots=True)
class CompareResult:
    """Several targets run one after another under the same settings."""

    results: tuple[RunResult, ...]

    @property
    def fastest(self) -> RunResult:
        return max(self.results, key=lambda r: r.qps)

    def relative(self, result: RunResult) -> float:
        """``result``'s throughput as a percentage of the fastest target's."""
        best = self.fastest.qps
        # Divide first: x / x is exactly 1.0, so the fastest reads exactly 100.
        return result.qps / best * 100.0 if best > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [
                {**result.to_dict(), "relative": self.relative(result)} for result in self.results
            ]
        }


@dataclass(frozen=True, slots=True)
class SqueezeResult:
    """A concurrency sweep of one target: every level measured, and the best one."""

    name: str
    mode: str
    levels: tuple[RunResult, ...]
    best: RunResult

    @property
    def concurrency(self) -> int:
        return self.best.concurrency

    @property
    def qps(self) -> float:
        return self.best.qps

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "best_concurrency": self.concurrency,
            "best_qps": self.qps,
            "levels": [level.to_dict() for level in self.levels],
        }
