"""The exceptions of :mod:`roost.gate`::

    GateError
    ├── GateRejected      the call was not made: fail fast, try again after ``retry_after``
    │   ├── GateOpen      the partition is open (tripped, forced open, or half-open with
    │   │                 its trial calls taken)
    │   └── GateFull      the partition's concurrency limit (bulkhead) is reached
    └── GateStateError    an event the state machine has no transition for (a bug in roost)

A caller catches :class:`GateRejected` and translates it at its own boundary (the gated
storage turns it into a :class:`~roost.storage.base.StorageError`), so that nothing above
needs to know gates exist. Rejections are raised before the dependency is touched, so they
are cheap and never count as failures of the dependency.
"""

from __future__ import annotations


class GateError(Exception):
    """Base of every error of :mod:`roost.gate`."""


class GateRejected(GateError):
    """A gate refused a call; nothing was sent to the dependency."""

    def __init__(self, gate: str, partition: str, retry_after: float, reason: str) -> None:
        super().__init__(
            f"gate {gate}[{partition}] refused the call: {reason}; retry in {retry_after:.1f} s"
        )
        self.gate = gate
        self.partition = partition
        self.retry_after = retry_after
        self.reason = reason


class GateOpen(GateRejected):
    """The partition is open: its dependency is considered broken for now."""


class GateFull(GateRejected):
    """The partition already has as many calls in flight as its bulkhead allows."""


class GateStateError(GateError):
    """An event that the state machine does not accept in the current state."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"no transition for event {event!r} in state {state!r}")
        self.state = state
        self.event = event
