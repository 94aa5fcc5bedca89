"""Test doubles for gates: a clock that moves only when told to.

::

    clock = VirtualClock()
    gate = Gate("storage", policy, clock=clock)
    ...
    clock.advance(policy.open_for)      # the open period is over, without waiting for it
"""

from __future__ import annotations


class VirtualClock:
    """A monotonic clock for gates, advanced by hand (``clock()`` reads it)."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self.now += seconds
        return self.now

    def __repr__(self) -> str:
        return f"<VirtualClock {self.now:g}>"
