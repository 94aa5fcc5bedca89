"""Statistics over benchmark samples: pure functions, no I/O, no clocks.

A *sample* is a throughput measurement (operations per second over one sampling interval; see
``roost.bench.micro``). A run yields a handful of them, rarely more than a few hundred, so the
maths favours clarity over speed and leans on the stdlib ``statistics`` module wherever it
already says what we mean.

Definitions, fixed here because reports and tests depend on them:

* **mean**: the arithmetic mean.
* **stddev**: the *sample* standard deviation (divisor ``n - 1``), because the samples are a
  sample of the code's throughput, not the whole population. It is ``0.0`` for fewer than two
  values, so a one-sample run reports no spread instead of failing.
* **median**: the middle value, or the mean of the two middle values.
* **percentile** (and so **p99**): *nearest rank*: the smallest sample such that at least
  ``p`` % of the samples are less than or equal to it. It always names a value that was
  actually observed, which is what a reader of "p99 of 5 samples" expects (that is the
  maximum); interpolating methods (``statistics.quantiles``) invent values between samples
  and need at least two of them.
* **cv**: coefficient of variation, ``stddev / mean``. It is ``inf`` when the mean is zero:
  a run that completed no operation has not become stable, and callers that loop "until the
  cv is small enough" must keep going.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def _require(values: Sequence[float]) -> None:
    if not values:
        raise ValueError("statistics of an empty sample list are undefined")


def mean(values: Sequence[float]) -> float:
    _require(values)
    return statistics.fmean(values)


def stddev(values: Sequence[float]) -> float:
    _require(values)
    if len(values) < 2:
        return 0.0
    return statistics.stdev(values)


def median(values: Sequence[float]) -> float:
    _require(values)
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, ``0 < p <= 100``."""
    _require(values)
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = sorted(values)
    # Rank is 1-based: ceil(p/100 * n). The rounding guards against 99/100*100 landing a hair
    # above 99 in binary floating point and picking the next rank up.
    rank = math.ceil(round(p / 100 * len(ordered), 9))
    return float(ordered[max(rank, 1) - 1])


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation (``stddev / mean``); ``inf`` when the mean is zero."""
    m = mean(values)
    if m == 0:
        return math.inf
    return stddev(values) / abs(m)


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures a report shows for one list of samples."""

    count: int
    mean: float
    stddev: float
    median: float
    p99: float
    minimum: float
    maximum: float
    cv: float

    def to_dict(self) -> dict[str, float | int | None]:
        # JSON has no infinity; a cv of inf (mean zero) becomes null.
        return {
            "count": self.count,
            "mean": self.mean,
            "stddev": self.stddev,
            "median": self.median,
            "p99": self.p99,
            "min": self.minimum,
            "max": self.maximum,
            "cv": self.cv if math.isfinite(self.cv) else None,
        }


def summarize(values: Sequence[float]) -> Summary:
    _require(values)
    return Summary(
        count=len(values),
        mean=mean(values),
        stddev=stddev(values),
        median=median(values),
        p99=percentile(values, 99),
        minimum=float(min(values)),
        maximum=float(max(values)),
        cv=cv(values),
    )
