"""The Sans-I/O core of a gate: partitions, trip policies, the safety valve, overrides.

A :class:`GateCore` guards one dependency. It is told about calls (:meth:`GateCore.admit`
before one, :meth:`GateCore.record` after it), about operators (:meth:`GateCore.force`) and
about peer nodes (:meth:`GateCore.remote`), always with the time ``now``; it never reads a
clock and never does I/O. What changed comes out as :class:`Change` records in
``GateCore.changes``, which the driver (:class:`roost.gate.Gate`) takes and hands to whoever
listens (the cluster, the admin commands, tests).

Partitions. Each partition (a database, a shard, a remote host: any string) has its own
:class:`Partition`: its state (:mod:`roost.gate.machine`), its window of outcomes, its calls
in flight. A partition is created by its first call and never forgotten, so the count the
safety valve divides by only grows.

Generations. Every transition of a partition, and every change of the override over it, bumps
its ``generation``, and a call carries the generation it was admitted in. An outcome that comes
back in a later generation updates the counters and nothing else: a slow call admitted before
a trip must not count as a failed trial of the half-open state that follows, nor a success
from before the trip close it.

Time-driven transitions are lazy: an open partition turns half-open when a call (or a
statistics snapshot, :meth:`GateCore.poll`) finds its open period over, and an override
expires when it is next looked at. So a gate needs no timers, and a test drives it with any
clock it likes.

Overrides. An operator may force a partition, or a whole gate (every partition, present and
future), ``open`` or ``closed``, until a deadline or indefinitely; ``auto`` removes the
override. An override sits on top of the state machine: while it holds, outcomes are counted
in the partition's totals only (not in its window) and fire no transition, and when it ends
the machine carries on from where it was. Forcing ``closed`` also resets the machine to
closed, so that the partition does not reopen the moment the override ends on the strength of
the failures that made the operator step in.

Half-open in a cluster. Every node of a cluster runs the machine of every partition itself,
and the nodes tell each other about trips and closes (:mod:`roost.gate.cluster`), so all of
them turn half-open at about the same moment. To keep the trial calls bounded cluster-wide,
not per node, the node of ``probe_rank`` r (its place among the reachable nodes, by name)
starts its trial calls only ``r * open_for`` seconds into the half-open state: the first node
probes, and the others wait for its verdict, which closes or reopens the partition for all.
Should the first node have no traffic for that partition (or have died), the next takes over
one open period later.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from roost.gate.errors import GateFull, GateOpen
from roost.gate.machine import Event, State, Window, transition
from roost.gate.policy import Policy


class Outcome(enum.Enum):
    SUCCESS = "success"  # the dependency answered (an error that is not its fault included)
    FAILURE = "failure"  # the dependency failed (or timed out)
    CANCELLED = "cancelled"  # the caller gave up first: says nothing about the dependency


@dataclass(frozen=True, slots=True)
class Trip:
    """Why a partition opened: the policy, a sentence, and the numbers it decided on."""

    policy: str  # consecutive_failures, failure_rate, slow_call_rate, half_open, peer
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)
    node: str = ""  # the node where it tripped ("" when here)
    error: str = ""  # the last failure seen, as text

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "reason": self.reason,
            "numbers": dict(self.numbers),
            "node": self.node,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's decision for a partition or a gate: ``open`` or ``closed``."""

    mode: str
    until: float | None  # deadline on the gate's clock; None: until set back to auto
    by: str = "operator"
    node: str = ""  # the node where it was set

    def left(self, now: float) -> float | None:
        return None if self.until is None else max(0.0, self.until - now)


@dataclass(frozen=True, slots=True)
class Change:
    """Something happened to a partition (or, with ``partition`` "", to a whole gate)."""

    gate: str
    partition: str
    event: str  # an Event's value, "override" (set or removed) or "expired" (its TTL ran out)
    state: State  # the machine state after it
    trip: Trip | None = None  # why it opened, for trips
    override: Override | None = None  # for "override": the new one (None: back to auto)
    open_for: float = 0.0  # for trips: seconds until the partition turns half-open
    node: str = ""  # "" when it happened here; else the peer node that reported it


class Partition:
    """The state of one (gate, partition). Read its fields; change it through GateCore."""

    __slots__ = (
        "calls",
        "consecutive",
        "failures",
        "generation",
        "in_flight",
        "last_error",
        "last_trip",
        "name",
        "open_until",
        "override",
        "rejected",
        "since",
        "slow",
        "state",
        "successes",
        "suppressed",
        "trials",
        "trips",
        "window",
    )

    def __init__(self, name: str, policy: Policy, now: float) -> None:
        self.name = name
        self.state = State.CLOSED
        self.since = now
        self.generation = 0
        self.window = Window(policy.window, now)
        self.consecutive = 0  # failures in a row, while closed
        self.in_flight = 0
        self.trials = 0  # half-open: trial calls admitted (and not cancelled)
        self.successes = 0  # half-open: trial calls that succeeded
        self.open_until = 0.0
        self.override: Override | None = None
        self.last_trip: Trip | None = None
        self.last_error = ""
        # Since the partition was created:
        self.calls = 0  # completed calls
        self.failures = 0
        self.slow = 0
        self.rejected = 0  # refused by the gate (open or full)
        self.trips = 0  # times it opened
        self.suppressed = 0  # trips the safety valve refused

    def __repr__(self) -> str:
        override = f" forced {self.override.mode}" if self.override else ""
        return (
            f"<Partition {self.name!r} {self.state.value}{override} in_flight={self.in_flight} "
            f"window={self.window.calls}/{self.window.failures}/{self.window.slow}>"
        )


class GateCore:
    """One gate's partitions and decisions. See the module docstring."""

    def __init__(self, name: str, policy: Policy | None = None, *, node: str = "") -> None:
        self.name = name
        self.policy = policy if policy is not None else Policy()
        self.node = node  # this node's name, written into the trips it reports
        self.probe_rank = 0
        self.override: Override | None = None  # gate-wide
        self.changes: list[Change] = []
        self._partitions: dict[str, Partition] = {}
        self._open = 0  # partitions whose machine is not closed (the safety valve's count)

    # -- calls -------------------------------------------------------------------------------

    def admit(self, name: str, now: float) -> tuple[Partition, int]:
        """Let a call through, or raise GateOpen / GateFull (the call must not be made).

        Returns the partition and the generation to hand back to :meth:`record`.
        """
        partition = self._partitions.get(name)
        if partition is None:
            partition = self.partition(name, now)
        override = partition.override or self.override
        if override is not None:
            override = self._current_override(partition, now)
        if override is not None:
            if override.mode == "open":
                partition.rejected += 1
                left = override.left(now)
                raise GateOpen(
                    self.name,
                    name,
                    self.policy.open_for if left is None else left,
                    f"forced open by {override.by}",
                )
        elif partition.state is not State.CLOSED:
            self._admit_trial(partition, now)
        limit = self.policy.max_concurrent
        if limit and partition.in_flight >= limit:
            if partition.state is State.HALF_OPEN and override is None:
                partition.trials -= 1
            partition.rejected += 1
            raise GateFull(self.name, name, 1.0, f"{partition.in_flight} calls in flight")
        partition.in_flight += 1
        return partition, partition.generation

    def _admit_trial(self, partition: Partition, now: float) -> None:
        policy = self.policy
        if partition.state is State.OPEN:
            if now < partition.open_until:
                partition.rejected += 1
                raise GateOpen(
                    self.name, partition.name, partition.open_until - now, self._why(partition)
                )
            self._fire(partition, Event.COOL_DOWN, now)
        # Counted from the end of the open period, which peers share (not from when this node
        # happened to notice it), so that the nodes' turns do not drift with their traffic.
        start = partition.open_until + self.probe_rank * policy.open_for
        if now < start:
            partition.rejected += 1
            raise GateOpen(
                self.name,
                partition.name,
                start - now,
                "half-open: another node makes the trial calls",
            )
        if partition.trials >= policy.half_open_calls:
            partition.rejected += 1
            raise GateOpen(
                self.name,
                partition.name,
                policy.open_for,
                f"half-open: {policy.half_open_calls} trial calls under way",
            )
        partition.trials += 1

    def record(
        self,
        partition: Partition,
        generation: int,
        now: float,
        duration: float,
        outcome: Outcome,
        error: str = "",
    ) -> None:
        """The call admitted in ``generation`` ended after ``duration`` seconds."""
        partition.in_flight -= 1
        current = generation == partition.generation
        if (
            outcome is _SUCCESS
            and current
            and partition.state is _CLOSED
            and not (duration >= self.policy.slow_call_threshold > 0.0)
            and partition.override is None
            and self.override is None
        ):
            # The common case, kept short: a closed partition's call went well.
            partition.calls += 1
            partition.consecutive = 0
            partition.window.record_success(now)
            return
        if outcome is Outcome.CANCELLED:
            if current and partition.state is State.HALF_OPEN and partition.trials > 0:
                partition.trials -= 1  # the trial slot is free again
            return
        policy = self.policy
        failed = outcome is Outcome.FAILURE
        slow = 0.0 < policy.slow_call_threshold <= duration
        partition.calls += 1
        if failed:
            partition.failures += 1
            partition.last_error = error
        if slow:
            partition.slow += 1
        if not current:
            return  # admitted in an earlier state (see the module docstring)
        if (partition.override or self.override) is not None:
            return  # forced: the machine stands still (see the module docstring)
        state = partition.state
        if state is State.CLOSED:
            partition.window.record(now, failed, slow)
            partition.consecutive = partition.consecutive + 1 if failed else 0
            if failed or slow:
                trip = self._verdict(partition)
                if trip is not None:
                    self._trip(partition, trip, now, policy.open_for)
        elif state is State.HALF_OPEN:
            if failed or slow:
                what = "failed" if failed else f"took {duration:.3g} s"
                trip = Trip(
                    "half_open",
                    f"a trial call {what}",
                    {
                        "duration": round(duration, 6),
                        "slow_call_threshold": policy.slow_call_threshold,
                    },
                    self.node,
                    partition.last_error if failed else "",
                )
                partition.last_trip = trip
                partition.trips += 1
                self._fire(partition, Event.PROBE_FAILED, now, trip=trip, open_for=policy.open_for)
            else:
                partition.successes += 1
                if partition.successes >= policy.half_open_calls:
                    self._fire(partition, Event.PROBES_PASSED, now)

    def _verdict(self, partition: Partition) -> Trip | None:
        """The trip policy that fires now, if one does (consecutive, failure rate, slowness)."""
        policy = self.policy
        error = partition.last_error
        if policy.consecutive_failures and partition.consecutive >= policy.consecutive_failures:
            return Trip(
                "consecutive_failures",
                f"{partition.consecutive} failures in a row",
                {"consecutive": partition.consecutive, "threshold": policy.consecutive_failures},
                self.node,
                error,
            )
        window = partition.window
        calls = window.calls
        if calls < policy.minimum_calls:
            return None
        if policy.failure_rate and window.failures >= policy.failure_rate * calls:
            rate = window.failures / calls
            return Trip(
                "failure_rate",
                f"{rate:.0%} of {calls} calls failed in {window.span:g} s",
                _numbers(window.calls, window.failures, window.slow, rate, policy.failure_rate),
                self.node,
                error,
            )
        if policy.slow_call_rate and window.slow >= policy.slow_call_rate * calls:
            rate = window.slow / calls
            return Trip(
                "slow_call_rate",
                f"{rate:.0%} of {calls} calls took {policy.slow_call_threshold:g} s or more "
                f"in {window.span:g} s",
                _numbers(window.calls, window.failures, window.slow, rate, policy.slow_call_rate),
                self.node,
                error,
            )
        return None

    def _trip(self, partition: Partition, trip: Trip, now: float, open_for: float) -> bool:
        """Open a closed partition, unless the safety valve says too many are open."""
        if partition.state is State.CLOSED:
            limit = self.policy.open_limit(len(self._partitions))
            if self._open >= limit:
                partition.suppressed += 1
                return False
        partition.last_trip = trip
        partition.trips += 1
        self._fire(partition, Event.TRIP, now, trip=trip, open_for=open_for)
        return True

    def _fire(
        self,
        partition: Partition,
        event: Event,
        now: float,
        *,
        trip: Trip | None = None,
        open_for: float = 0.0,
        node: str = "",
    ) -> None:
        before = partition.state
        after = transition(before, event)
        partition.state = after
        partition.since = now
        partition.generation += 1
        if after is State.OPEN:
            partition.open_until = now + open_for
        elif after is State.HALF_OPEN:
            partition.trials = partition.successes = 0
        else:
            partition.window.clear()
            partition.consecutive = 0
        if before is State.CLOSED:
            self._open += 1
        elif after is State.CLOSED:
            self._open -= 1
        self.changes.append(
            Change(self.name, partition.name, event.value, after, trip, None, open_for, node)
        )

    def _why(self, partition: Partition) -> str:
        trip = partition.last_trip
        if trip is None:
            return "open"
        where = f" on {trip.node}" if trip.node and trip.node != self.node else ""
        return f"open{where}: {trip.reason}"

    # -- partitions ----------------------------------------------------------------------------

    def partition(self, name: str, now: float) -> Partition:
        """The partition called ``name``, created (closed) when new."""
        partition = self._partitions.get(name)
        if partition is None:
            partition = self._partitions[name] = Partition(name, self.policy, now)
        return partition

    def get(self, name: str) -> Partition | None:
        return self._partitions.get(name)

    def __iter__(self) -> Iterator[Partition]:
        return iter(list(self._partitions.values()))

    def __len__(self) -> int:
        return len(self._partitions)

    @property
    def open_count(self) -> int:
        """Partitions whose state machine is open or half-open (what the valve counts)."""
        return self._open

    def configure(self, policy: Policy, now: float) -> None:
        """New thresholds; a new window length starts the windows afresh."""
        if policy.window != self.policy.window:
            for partition in self._partitions.values():
                partition.window = Window(policy.window, now)
        self.policy = policy

    def poll(self, now: float) -> None:
        """Apply what time alone changes: expired overrides, open periods that are over."""
        self._current_override(None, now)
        for partition in list(self._partitions.values()):
            if partition.override is not None:
                self._current_override(partition, now)
            if partition.state is State.OPEN and now >= partition.open_until:
                self._fire(partition, Event.COOL_DOWN, now)

    # -- overrides -----------------------------------------------------------------------------

    def _current_override(self, partition: Partition | None, now: float) -> Override | None:
        """The override in force for ``partition`` (or the gate's), dropping expired ones."""
        gate = self.override
        if gate is not None and gate.until is not None and now >= gate.until:
            self.override = gate = None
            for each in self._partitions.values():
                each.generation += 1
            self.changes.append(Change(self.name, "", "expired", State.CLOSED))
        if partition is None:
            return gate
        own = partition.override
        if own is not None and own.until is not None and now >= own.until:
            partition.override = own = None
            partition.generation += 1
            self.changes.append(Change(self.name, partition.name, "expired", partition.state))
        return own or gate

    def force(
        self,
        name: str | None,
        mode: str,
        ttl: float | None,
        now: float,
        *,
        by: str = "operator",
        node: str = "",
    ) -> None:
        """Force a partition (``name``) or the whole gate (None) ``open``, ``closed`` or back
        to ``auto``, for ``ttl`` seconds (None: until changed)."""
        if mode not in ("open", "closed", "auto"):
            raise ValueError(f"mode must be open, closed or auto, not {mode!r}")
        override = (
            None
            if mode == "auto"
            else Override(mode, None if ttl is None else now + ttl, by, node or self.node)
        )
        if name is None:
            self.override = override
            targets = list(self._partitions.values())
            if mode == "auto":
                for partition in targets:
                    partition.override = None
            state = State.CLOSED
        else:
            partition = self.partition(name, now)
            partition.override = override
            targets = [partition]
            state = partition.state
        for partition in targets:
            partition.generation += 1  # calls admitted under the old regime count for nothing
        if mode == "closed":
            for partition in targets:
                if partition.state is not State.CLOSED:
                    self._fire(partition, Event.RESET, now, node=node)
                    state = State.CLOSED
        self.changes.append(
            Change(self.name, name or "", "override", state, override=override, node=node)
        )

    # -- peers -----------------------------------------------------------------------------------

    def remote(
        self,
        name: str,
        state: State,
        now: float,
        *,
        node: str,
        trip: Trip | None = None,
        open_for: float = 0.0,
    ) -> None:
        """A peer node reports that partition ``name`` went ``state`` (open or closed)."""
        partition = self.partition(name, now)
        if state is State.OPEN:
            if partition.state is State.OPEN and now + open_for <= partition.open_until:
                return  # open here at least as long already
            if partition.state is State.HALF_OPEN and open_for <= 0:
                return  # the peer is as far as we are: nothing new
            why = trip or Trip("peer", f"tripped on {node}", node=node)
            if partition.state is State.CLOSED:
                limit = self.policy.open_limit(len(self._partitions))
                if self._open >= limit:
                    partition.suppressed += 1
                    return
                partition.trips += 1
            partition.last_trip = why
            self._fire(partition, Event.TRIP, now, trip=why, open_for=open_for, node=node)
        elif state is State.CLOSED and partition.state is not State.CLOSED:
            self._fire(partition, Event.RESET, now, node=node)

    def take_changes(self) -> list[Change]:
        changes, self.changes = self.changes, []
        return changes

    # -- introspection -----------------------------------------------------------------------

    def statistics(self, now: float) -> list[dict[str, Any]]:
        """One row per partition (after :meth:`poll`): what ``roost ctl gates`` shows."""
        self.poll(now)
        return [self._row(partition, now) for partition in self._partitions.values()]

    def _row(self, partition: Partition, now: float) -> dict[str, Any]:
        window = partition.window
        window.advance(now)
        override = partition.override or self.override
        calls = window.calls
        return {
            "gate": self.name,
            "partition": partition.name,
            "state": f"forced-{override.mode}" if override else partition.state.value,
            "machine": partition.state.value,
            "since": round(now - partition.since, 3),
            "override": None
            if override is None
            else {
                "mode": override.mode,
                "ttl": None if override.until is None else round(override.left(now) or 0.0, 3),
                "by": override.by,
                "node": override.node,
                "scope": "partition" if partition.override else "gate",
            },
            "window_calls": calls,
            "failure_rate": round(window.failures / calls, 4) if calls else 0.0,
            "slow_rate": round(window.slow / calls, 4) if calls else 0.0,
            "calls": partition.calls,
            "failures": partition.failures,
            "slow": partition.slow,
            "rejected": partition.rejected,
            "in_flight": partition.in_flight,
            "trips": partition.trips,
            "suppressed": partition.suppressed,
            "open_for": round(max(0.0, partition.open_until - now), 3)
            if partition.state is State.OPEN
            else 0.0,
            "last_trip": None if partition.last_trip is None else partition.last_trip.as_json(),
            "last_error": partition.last_error,
        }

    def __repr__(self) -> str:
        override = f" forced {self.override.mode}" if self.override else ""
        return f"<GateCore {self.name!r}{override} partitions={len(self)} open={self._open}>"


_SUCCESS: Final = Outcome.SUCCESS
_CLOSED: Final = State.CLOSED


def _numbers(
    calls: int, failures: int, slow: int, rate: float, threshold: float
) -> dict[str, float]:
    return {
        "calls": calls,
        "failures": failures,
        "slow": slow,
        "rate": round(rate, 4),
        "threshold": threshold,
    }
