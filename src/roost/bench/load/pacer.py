"""The open loop's clock: sends at a fixed rate, each message stamped with the time it was due.

Latency in the open loop is measured from the moment a message was *due*, not from when the
generator got round to sending it, so that a stall anywhere shows in the figures instead of
quietly lowering the rate (the "coordinated omission" mistake). That is only fair to the
server if the generator sends on time: every microsecond between the due time and the write
is charged to the server.

Event-loop timers cannot do that. uvloop (libuv) keeps time in whole milliseconds, and the
standard loop's epoll wait rounds its timeout up to one: ``asyncio.sleep(0.001)`` returns
after 1 to 2 ms. A pacer driven by them sends in bursts, one per timer tick, and the oldest
message of each burst is up to 2 ms late before it leaves the generator. At 2,000 messages a
second that put a floor of about 1.5 ms under the 90th percentile of every server measured,
ejabberd's and Prosody's included, and doubled roost's 99th.

So the timing is done by a thread of its own, which sleeps (``threading.Event.wait``, a
high-resolution timer, typically within 0.1 ms) until the next message is due and then
wakes the event loop with ``call_soon_threadsafe``; the loop sends everything due by then.
The thread does no I/O and holds the GIL only to compute the next due time. Each message is
stamped with its due time, whatever the lateness: what the thread's wake-up and the event
loop's turn add is counted, not hidden.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Final

BEHIND_S: Final = 0.1  # a send this late marks the open loop as fallen behind...
BEHIND_RATE: Final = 0.95  # ...as does achieving less than this share of the target rate
MIN_WAKE_NS: Final = 50_000  # the thread wakes the loop at most every 50 µs (20,000 wakes/s)


class Pacer:
    """Open loop: calls ``send(i, due_ns)`` ``rate`` times a second until stopped."""

    __slots__ = ("_due", "_ended", "_pending", "elapsed", "max_lag", "rate", "sent")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.sent = 0  # messages handed to send()
        self.max_lag = 0.0  # seconds between a message's due time and its send, at most
        self.elapsed = 0.0
        self._due = 0  # messages due so far (written by the thread, read by the loop)
        self._pending = False  # a wake-up is queued on the loop
        self._ended = False  # the thread has published the last due message

    async def run(
        self, sending: Callable[[], bool], send: Callable[[int, int], None], duration: float
    ) -> None:
        """Pace sends for ``duration`` seconds, or until ``sending()`` turns false."""
        loop = asyncio.get_running_loop()
        interval = 1e9 / self.rate  # ns
        start = time.monotonic_ns()
        end = start + round(duration * 1e9)
        self._ended = False
        finished = loop.create_future()
        stop = threading.Event()

        def fire() -> None:
            self._pending = False
            if finished.done():
                return
            ended = self._ended  # read first: the thread sets it after the final count
            due = self._due
            now = time.monotonic_ns()
            while self.sent < due:
                if not sending():
                    break
                meant = start + round(self.sent * interval)
                lag = (now - meant) / 1e9
                if lag > self.max_lag:
                    self.max_lag = lag
                send(self.sent, meant)
                self.sent += 1
            if ended or not sending():
                finished.set_result(None)

        def tick() -> None:
            # Thread: sleep until the next message is due, publish the count, wake the loop.
            next_wake = start
            while not stop.is_set():
                now = time.monotonic_ns()
                if now >= end:
                    due = int((end - start) / interval)
                else:
                    due = int((now - start) / interval) + 1
                if due > self._due:
                    self._due = due
                    if not self._pending:
                        self._pending = True
                        try:
                            loop.call_soon_threadsafe(fire)
                        except RuntimeError:  # the loop closed under us
                            return
                if now >= end:
                    self._ended = True
                    try:
                        loop.call_soon_threadsafe(fire)
                    except RuntimeError:
                        pass
                    return
                next_wake = max(start + round(due * interval), next_wake + MIN_WAKE_NS)
                stop.wait(max(0, next_wake - time.monotonic_ns()) / 1e9)

        thread = threading.Thread(target=tick, name="roost-bench-pacer", daemon=True)
        thread.start()
        try:
            await finished
        finally:
            stop.set()
            self.elapsed = (time.monotonic_ns() - start) / 1e9
            await asyncio.to_thread(thread.join)

    def summary(self) -> dict[str, Any]:
        achieved = self.sent / self.elapsed if self.elapsed > 0 else 0.0
        behind = self.max_lag > BEHIND_S or (
            self.elapsed > 1 and achieved < BEHIND_RATE * self.rate
        )
        return {
            "target_rate": self.rate,
            "achieved_rate": round(achieved, 1),
            "max_lag_ms": round(self.max_lag * 1000, 1),
            "fell_behind": behind,
        }
