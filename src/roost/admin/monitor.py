"""What ``roost ctl status`` reports that the node does not count by itself.

*Event-loop lag*: a timer asks to run every :data:`INTERVAL` seconds and records how late it
ran. Everything on a node shares one event loop, so this lateness is what every client waits
on top of its own work: a few milliseconds is healthy, hundreds mean something blocks the
loop (a slow hook, a synchronous call, a shell evaluation that does not await).

*Message rates*: a ``c2s.inbound`` handler at the lowest priority counts the stanzas clients
send, and messages among them (one integer increment each: it sits on the message path).
Rates are computed over the last :data:`RATE_WINDOW` seconds of samples.

*Memory*: the resident set size, from ``/proc/self/statm`` (Linux), else the peak from
``getrusage``.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from roost.xmpp.element import Element

if TYPE_CHECKING:
    from roost.c2s.session import C2SSession
    from roost.core.server import Server

INTERVAL: Final = 0.5
LAG_WINDOW: Final = 60.0  # seconds over which the largest lag is kept
RATE_WINDOW: Final = 10.0
HOOK_PRIORITY: Final = -1000  # first: count what clients send, before any module acts


class Monitor:
    def __init__(self, server: Server) -> None:
        self._server = server
        self.messages = 0
        self.stanzas = 0
        self._lags: deque[tuple[float, float]] = deque()  # (when, lag seconds)
        self._counts: deque[tuple[float, int, int]] = deque()  # (when, messages, stanzas)
        self._timer: asyncio.TimerHandle | None = None
        self._expected = 0.0

    def start(self) -> None:
        self._server.hooks.add("c2s.inbound", self._count, HOOK_PRIORITY)
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._server.hooks.remove("c2s.inbound", self._count, HOOK_PRIORITY)

    def _count(self, stanza: Element, session: C2SSession) -> Element:
        self.stanzas += 1
        if stanza.name == "message":
            self.messages += 1
        return stanza

    def _schedule(self) -> None:
        # The loop's own clock may be cached per iteration (uvloop's is, in milliseconds);
        # the monotonic clock measures the real delay.
        self._expected = time.monotonic() + INTERVAL
        self._timer = asyncio.get_running_loop().call_later(INTERVAL, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        self._lags.append((now, max(0.0, now - self._expected)))
        while self._lags and self._lags[0][0] < now - LAG_WINDOW:
            self._lags.popleft()
        self._counts.append((now, self.messages, self.stanzas))
        while len(self._counts) > 1 and self._counts[0][0] < now - RATE_WINDOW:
            self._counts.popleft()
        self._schedule()

    def max_lag(self) -> float:
        return max((lag for _, lag in self._lags), default=0.0)

    def rates(self) -> tuple[float, float]:
        """(messages/s, stanzas/s) over the last RATE_WINDOW seconds."""
        if len(self._counts) < 2:
            return 0.0, 0.0
        (t0, m0, s0), (t1, m1, s1) = self._counts[0], self._counts[-1]
        elapsed = t1 - t0
        if elapsed <= 0:
            return 0.0, 0.0
        return (m1 - m0) / elapsed, (s1 - s0) / elapsed

    def lag(self) -> float | None:
        """The latest lag in seconds (None before the first measurement)."""
        return self._lags[-1][1] if self._lags else None

    def snapshot(self) -> dict[str, Any]:
        messages, stanzas = self.rates()
        lag = self.lag()
        return {
            "loop_lag_ms": None if lag is None else round(lag * 1000, 2),
            "loop_lag_max_ms": round(self.max_lag() * 1000, 2),
            "messages_per_second": round(messages, 2),
            "stanzas_per_second": round(stanzas, 2),
            "messages_total": self.messages,
            "stanzas_total": self.stanzas,
            "memory_rss": rss(),
        }


def rss() -> int:
    """Resident set size in bytes."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, else KiB
