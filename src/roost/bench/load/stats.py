"""What a load run measures, and how.

* **Latency** is end to end within one process: the sender writes ``time.monotonic_ns()``
  into the stanza (a chat body, a presence status), the receiver subtracts it from the clock
  read when the bytes arrived (once per socket read, shared by the stanzas in it). Sender and
  receiver are the same process, so there is no clock skew. Values go into an HDR histogram
  (``hdrhistogram``) at microsecond resolution with three significant digits, from 1 µs to one
  hour; percentiles are the histogram's (p50, p90, p99, p99.9, max).
* In the **open loop** the timestamp is the moment the pacer *meant* to send, not when it got
  round to it: if the generator or the server stalls, the delay shows in the latency instead of
  silently lowering the rate (the "coordinated omission" mistake).
* **Generator CPU** is ``time.process_time()`` (user + system time of this process) over wall
  time, per phase, as a share of one core. A load generator near 100% of its core measures
  itself rather than the server, so above :data:`CPU_WARNING` a warning says so.
* **Server RSS** is ``VmRSS`` from ``/proc/PID/status`` of ``server_pid``; per session it is
  the growth while clients were logged in divided by the clients online.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

from hdrh.histogram import HdrHistogram

CPU_WARNING: Final = 0.85  # share of one core above which the generator may be the limit
_LOWEST_US: Final = 1
_HIGHEST_US: Final = 3_600_000_000  # one hour
_DIGITS: Final = 3
_PENDING_LIMIT: Final = 50_000  # distinct values counted before they go into the histogram


class Latency:
    """An HDR histogram of latencies in microseconds.

    ``record_ns`` only counts the value in a dict: ``hdrh``'s ``record_value`` is Python code
    costing a few microseconds, more than everything else done per delivered message, while
    latencies repeat (a run sees a few thousand distinct microsecond values). The counts go
    into the histogram in bulk, when it is read or the dict grows large.
    """

    __slots__ = ("_hist", "_pending", "count")

    def __init__(self) -> None:
        self._hist = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self._pending: dict[int, int] = {}
        self.count = 0

    def record_ns(self, nanoseconds: int) -> None:
        micros = nanoseconds // 1000
        pending = self._pending
        pending[micros] = pending.get(micros, 0) + 1
        self.count += 1
        if len(pending) > _PENDING_LIMIT:
            self._flush()

    def _flush(self) -> None:
        hist = self._hist
        for micros, times in self._pending.items():
            hist.record_value(min(max(micros, _LOWEST_US), _HIGHEST_US), times)
        self._pending.clear()

    def percentile_us(self, percentile: float) -> int:
        self._flush()
        return int(self._hist.get_value_at_percentile(percentile)) if self.count else 0

    def summary(self) -> dict[str, float] | None:
        """Percentiles in milliseconds, or None when nothing was recorded."""
        if not self.count:
            return None
        self._flush()
        hist = self._hist
        return {
            "count": self.count,
            "mean_ms": round(hist.get_mean_value() / 1000, 3),
            "p50_ms": hist.get_value_at_percentile(50) / 1000,
            "p90_ms": hist.get_value_at_percentile(90) / 1000,
            "p99_ms": hist.get_value_at_percentile(99) / 1000,
            "p999_ms": hist.get_value_at_percentile(99.9) / 1000,
            "max_ms": hist.get_max_value() / 1000,
        }


class Counts:
    """The run's event counters, shared by the clients and the scenario.

    ``sent``/``delivered`` count chat messages or presence notifications; ``errors`` and
    ``failures`` are keyed by a readable reason (``"message error: service-unavailable"``,
    ``"stream error: system-shutdown"``), failures also by phase (``connect``, ``auth``...).
    """

    __slots__ = (
        "delivered",
        "disconnects",
        "duplicates",
        "errors",
        "failures",
        "first_send",
        "last_delivery",
        "sent",
        "stale",
    )

    def __init__(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.duplicates = 0
        self.stale = 0  # carrying another run's marker (offline messages of an earlier run)
        self.disconnects = 0
        self.errors: Counter[str] = Counter()
        self.failures: dict[str, Counter[str]] = {}
        self.first_send = 0  # monotonic ns
        self.last_delivery = 0

    def fail(self, phase: str, reason: str) -> None:
        self.failures.setdefault(phase, Counter())[reason] += 1

    def failed(self, phase: str | None = None) -> int:
        if phase is not None:
            return sum(self.failures.get(phase, Counter()).values())
        return sum(sum(c.values()) for c in self.failures.values())


@dataclass(frozen=True, slots=True)
class CpuSample:
    wall: float
    cpu: float
    user: float
    system: float


def cpu_sample() -> CpuSample:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSample(time.perf_counter(), time.process_time(), usage.ru_utime, usage.ru_stime)


def cpu_share(start: CpuSample, end: CpuSample) -> dict[str, float]:
    """CPU used between two samples, as a share of one core (1.0 = one core busy)."""
    wall = end.wall - start.wall
    if wall <= 0:
        return {"wall_s": 0.0, "share": 0.0, "user": 0.0, "system": 0.0}
    return {
        "wall_s": round(wall, 3),
        "share": round((end.cpu - start.cpu) / wall, 3),
        "user": round((end.user - start.user) / wall, 3),
        "system": round((end.system - start.system) / wall, 3),
    }


def read_rss(pid: int | str) -> int | None:
    """Resident set size in bytes from /proc/PID/status (VmRSS), or None if unavailable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_report(
    before: int | None, after_login: int | None, end: int | None, sessions: int
) -> dict[str, Any] | None:
    """Server memory: before logging in, after, at the end; growth per session online."""
    if before is None and after_login is None and end is None:
        return None
    report: dict[str, Any] = {
        "before_bytes": before,
        "after_login_bytes": after_login,
        "end_bytes": end,
        "per_session_bytes": None,
    }
    last = end if end is not None else after_login
    if before is not None and last is not None and sessions > 0:
        report["delta_bytes"] = last - before
        report["per_session_bytes"] = round((last - before) / sessions)
    return report
