"""The gates of a cluster agree: trips, recoveries and overrides travel over the mesh.

Every node runs every gate itself (:mod:`roost.gate.core`) and records its own outcomes: a
node decides on what it saw, not on counters summed across the cluster, so no call waits for
another node and no node is a single point of failure. What the nodes share are decisions,
on the mesh channel ``gates``:

``Opened``   a partition tripped here (or a trial call failed here): the policy, the reason,
             the numbers, the last error, and how long it stays open. A peer opens the same
             partition for that long, so the cluster stops calling a broken database within
             one message's flight after the first node noticed.
``Closed``   a partition's trial calls passed here: peers close it too.
``Forced``   an operator forced a partition or a whole gate open, closed, or back to auto,
             with the TTL left and the wall-clock time of the decision.
``Snapshot`` what a node knows (open partitions, operators' decisions), sent to every peer
             whose link comes up: a node that joins or comes back learns the current states.

Only news that happened on a node is sent by that node; what a node learns from a peer it
applies and does not pass on, so a report crosses each link once and cannot loop (every node
is linked to every other). Trips from peers are applied through the local safety valve like
local ones.

Shared state has a known cost: one node's bad path to a database (a broken network link, a
local disk) opens that partition for every node (Polly #287 discusses it). The safety valve
bounds the damage to a share of a gate's partitions, the open period bounds it in time, and
an operator can force a partition closed cluster-wide.

Recovery is coordinated by rank, not by a lock: all nodes turn half-open together, and the
node whose name sorts first among the reachable ones makes the trial calls while the others
wait one open period per rank for its verdict (see :mod:`roost.gate.core`). So normally one
node probes a half-open partition, and the next takes over when the first is gone or idle.

Operators' decisions are ordered by their wall-clock time (ties by node name), last writer
wins, so that a node which missed an ``auto`` while it was away cannot bring an old override
back with its snapshot. Clocks only need to agree to within the time between two operators'
decisions; TTLs travel as seconds left, and each node counts them down on its own clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import msgspec

from roost.cluster.mesh import Mesh, Peer
from roost.gate.core import Change, Trip
from roost.gate.machine import State
from roost.gate.registry import Gates

log = logging.getLogger("roost.gate.cluster")

CHANNEL: Final = "gates"


class Opened(msgspec.Struct, tag="opened", frozen=True):
    gate: str
    partition: str
    open_for: float
    policy: str = "peer"
    reason: str = ""
    numbers: dict[str, float] = msgspec.field(default_factory=dict)
    error: str = ""
    origin: str = ""  # the node where it tripped


class Closed(msgspec.Struct, tag="closed", frozen=True):
    gate: str
    partition: str


class Forced(msgspec.Struct, tag="forced", frozen=True):
    gate: str
    partition: str  # "" for the whole gate
    mode: str  # open, closed or auto
    ttl: float | None  # seconds left; None: until changed
    by: str
    stamp: float  # wall-clock time of the decision, to order decisions
    origin: str  # the node where the operator acted


class Snapshot(msgspec.Struct, tag="snapshot", frozen=True):
    opened: list[Opened]
    forced: list[Forced]


GateMessage = Opened | Closed | Forced | Snapshot


class GateSync:
    """Keeps a node's :class:`~roost.gate.registry.Gates` in step with its peers'."""

    def __init__(self, mesh: Mesh, gates: Gates, *, wall: Callable[[], float] = time.time) -> None:
        self.mesh = mesh
        self.gates = gates
        self._wall = wall
        # (gate, partition) -> (stamp, origin) of the latest operator decision known.
        self._decisions: dict[tuple[str, str], tuple[float, str]] = {}
        self.sent = 0
        self.received = 0
        mesh.subscribe(CHANNEL, self._receive, type=GateMessage)
        mesh.on_peer_up(self._peer_up)
        mesh.on_peer_down(self._peer_down)
        gates.on_change(self._changed)
        self._rank()

    def stop(self) -> None:
        self.mesh.unsubscribe(CHANNEL)
        self.gates.remove_listener(self._changed)

    # -- news from here --------------------------------------------------------------------------

    def _changed(self, change: Change) -> None:
        if change.node:
            return  # a peer's news, applied here: that peer told every node itself
        message: Opened | Closed | Forced
        if change.event == "override":
            stamp = self._wall()
            self._decisions[(change.gate, change.partition)] = (stamp, self.mesh.node)
            message = self._forced(change.gate, change.partition, stamp, self.mesh.node)
        elif change.state is State.OPEN and change.event in ("trip", "probe-failed"):
            message = _opened(change.gate, change.partition, change.open_for, change.trip)
        elif change.state is State.CLOSED and change.event in ("probes-passed", "reset"):
            message = Closed(change.gate, change.partition)
        else:
            return  # turning half-open, an override's TTL running out: every node sees it
        self.sent += self.mesh.broadcast(CHANNEL, message)

    def _forced(self, gate_name: str, partition: str, stamp: float, origin: str) -> Forced:
        gate = self.gates.gate(gate_name)
        core = gate.core
        if partition:
            found = core.get(partition)
            override = found.override if found is not None else None
        else:
            override = core.override
        if override is None:
            return Forced(gate_name, partition, "auto", None, "operator", stamp, origin)
        ttl = override.left(gate.clock())
        return Forced(gate_name, partition, override.mode, ttl, override.by, stamp, origin)

    # -- news from peers -------------------------------------------------------------------------

    def _receive(self, node: str, message: GateMessage) -> None:
        self.received += 1
        if isinstance(message, Snapshot):
            for forced in message.forced:
                self._apply_forced(node, forced)
            for opened in message.opened:
                self._apply_opened(node, opened)
        elif isinstance(message, Opened):
            self._apply_opened(node, message)
        elif isinstance(message, Closed):
            self.gates.gate(message.gate).remote(message.partition, State.CLOSED, node=node)
        else:
            self._apply_forced(node, message)

    def _apply_opened(self, node: str, message: Opened) -> None:
        origin = message.origin or node
        trip = Trip(message.policy, message.reason, dict(message.numbers), origin, message.error)
        self.gates.gate(message.gate).remote(
            message.partition, State.OPEN, node=node, trip=trip, open_for=message.open_for
        )

    def _apply_forced(self, node: str, message: Forced) -> None:
        key = (message.gate, message.partition)
        order = (message.stamp, message.origin)
        known = self._decisions.get(key)
        if known is not None and known >= order:
            return  # we know a later decision
        self._decisions[key] = order
        if not message.partition and message.mode == "auto":
            # A gate-wide auto clears the partitions' overrides: older ones lose to it.
            for other in list(self._decisions):
                if other[0] == message.gate and self._decisions[other] < order:
                    self._decisions[other] = order
        self.gates.gate(message.gate).force(
            message.partition or None,
            message.mode,
            message.ttl,
            by=message.by,
            node=message.origin or node,
        )

    # -- peers -----------------------------------------------------------------------------------

    def _peer_up(self, peer: Peer) -> None:
        self._rank()
        snapshot = self.snapshot()
        if snapshot.opened or snapshot.forced:
            self.sent += self.mesh.send(peer.name, CHANNEL, snapshot)

    def _peer_down(self, peer: Peer) -> None:
        self._rank()

    def _rank(self) -> None:
        names = sorted({self.mesh.node, *self.mesh.peers()})
        self.gates.set_probe_rank(names.index(self.mesh.node))

    def snapshot(self) -> Snapshot:
        """What this node knows: its open partitions and the operators' decisions."""
        opened = []
        for gate in self.gates:
            now = gate.clock()
            for partition in gate.core:
                if partition.state is State.CLOSED:
                    continue
                left = (
                    max(0.0, partition.open_until - now) if partition.state is State.OPEN else 0.0
                )
                opened.append(_opened(gate.name, partition.name, left, partition.last_trip))
        forced = [
            self._forced(gate, partition, stamp, origin)
            for (gate, partition), (stamp, origin) in self._decisions.items()
        ]
        return Snapshot(opened, forced)

    def statistics(self) -> dict[str, int]:
        return {"sent": self.sent, "received": self.received, "rank": self.gates.probe_rank}

    def __repr__(self) -> str:
        return f"<GateSync {self.mesh.node!r} rank={self.gates.probe_rank}>"


def _opened(gate: str, partition: str, open_for: float, trip: Trip | None) -> Opened:
    if trip is None:
        return Opened(gate, partition, open_for)
    return Opened(
        gate,
        partition,
        open_for,
        trip.policy,
        trip.reason,
        dict(trip.numbers),
        trip.error,
        trip.node,
    )
