"""The state machine of one (gate, partition), as a table, and its sliding window.

::

                 TRIP                       COOL_DOWN
    CLOSED ───────────────▶ OPEN ──────────────────────▶ HALF_OPEN
      ▲  ▲                  ▲  │ TRIP (again: the open       │  │
      │  │                  │  └─ period starts over)        │  │
      │  │                  └────── PROBE_FAILED, TRIP ──────┘  │
      │  └──────────────────────── PROBES_PASSED ───────────────┘
      └──── RESET (from OPEN or HALF_OPEN: a peer's probes passed, an operator closed it)

The table (:data:`TRANSITIONS`) is the whole machine: :func:`transition` looks an event up
and raises :class:`~roost.gate.errors.GateStateError`, naming both, for a pair it does not
list. Everything that decides *when* to fire an event (the trip policies, the clock, the
safety valve, the cluster) lives in :mod:`roost.gate.core`; this module has no opinions.

:class:`Window` counts calls, failures and slow calls over the last ``span`` seconds in
:data:`BUCKETS` buckets, keeping running totals: recording and reading are O(1), and a bucket
that slides out of the window is subtracted from the totals once (as resilience4j's time-based
window does).
"""

from __future__ import annotations

import enum
from typing import Final

from roost.gate.errors import GateStateError


class State(enum.Enum):
    CLOSED = "closed"  # calls go through; outcomes are counted
    OPEN = "open"  # calls are refused at once
    HALF_OPEN = "half-open"  # a few trial calls go through, to see whether it recovered


class Event(enum.Enum):
    TRIP = "trip"  # a trip policy fired (here, or on a peer node)
    COOL_DOWN = "cool-down"  # the open period is over
    PROBES_PASSED = "probes-passed"  # every trial call succeeded
    PROBE_FAILED = "probe-failed"  # a trial call failed or was slow
    RESET = "reset"  # closed from outside: a peer's trial calls passed, or an operator


TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (State.CLOSED, Event.TRIP): State.OPEN,
    (State.OPEN, Event.TRIP): State.OPEN,
    (State.OPEN, Event.COOL_DOWN): State.HALF_OPEN,
    (State.OPEN, Event.RESET): State.CLOSED,
    (State.HALF_OPEN, Event.TRIP): State.OPEN,
    (State.HALF_OPEN, Event.PROBE_FAILED): State.OPEN,
    (State.HALF_OPEN, Event.PROBES_PASSED): State.CLOSED,
    (State.HALF_OPEN, Event.RESET): State.CLOSED,
}


def transition(state: State, event: Event) -> State:
    """The state after ``event`` in ``state``. Raises GateStateError when there is none."""
    target = TRANSITIONS.get((state, event))
    if target is None:
        raise GateStateError(state.value, event.value)
    return target


BUCKETS: Final = 10


class Window:
    """Calls, failures and slow calls of the last ``span`` seconds. See the module docstring."""

    __slots__ = (
        "_b_calls",
        "_b_failures",
        "_b_slow",
        "_head",
        "_next",
        "_width",
        "calls",
        "failures",
        "slow",
    )

    def __init__(self, span: float, now: float) -> None:
        self._width = span / BUCKETS
        self._head = int(now // self._width)  # absolute index of the newest bucket
        self._next = (self._head + 1) * self._width  # when the next bucket begins
        self._b_calls = [0] * BUCKETS
        self._b_failures = [0] * BUCKETS
        self._b_slow = [0] * BUCKETS
        self.calls = 0
        self.failures = 0
        self.slow = 0

    @property
    def span(self) -> float:
        return self._width * BUCKETS

    def advance(self, now: float) -> None:
        """Let the buckets older than ``now - span`` slide out of the totals."""
        index = int(now // self._width)
        head = self._head
        if index <= head:
            return  # same bucket (or a clock that stepped back: stay in the newest)
        if index - head >= BUCKETS:
            self.clear()
        else:
            calls, failures, slow = self._b_calls, self._b_failures, self._b_slow
            for absolute in range(head + 1, index + 1):
                slot = absolute % BUCKETS
                self.calls -= calls[slot]
                self.failures -= failures[slot]
                self.slow -= slow[slot]
                calls[slot] = failures[slot] = slow[slot] = 0
        self._head = index
        self._next = (index + 1) * self._width

    def record(self, now: float, failed: bool, slow: bool) -> None:
        self.advance(now)
        slot = self._head % BUCKETS
        self._b_calls[slot] += 1
        self.calls += 1
        if failed:
            self._b_failures[slot] += 1
            self.failures += 1
        if slow:
            self._b_slow[slot] += 1
            self.slow += 1

    def record_success(self, now: float) -> None:
        """``record(now, False, False)``, the common case, shorter."""
        if now >= self._next:
            self.advance(now)
        self._b_calls[self._head % BUCKETS] += 1
        self.calls += 1

    def clear(self) -> None:
        for counts in (self._b_calls, self._b_failures, self._b_slow):
            counts[:] = [0] * BUCKETS
        self.calls = self.failures = self.slow = 0

    def __repr__(self) -> str:
        return (
            f"<Window {self.span:g}s calls={self.calls} failures={self.failures} slow={self.slow}>"
        )
