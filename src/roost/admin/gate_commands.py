"""``gates`` and ``gate open|close|auto``: the circuit breakers, seen and overridden.

``roost ctl gates`` lists every gate and partition (:mod:`roost.gate`): its state, the failure
and slow-call rates over the sliding window and the calls in it, the calls since start, how
many were refused, and why it last opened (the policy's sentence, the node where it tripped).
On a clustered node it asks every node: the states agree across the cluster, the numbers are
each node's own traffic, and a node whose view differs is worth seeing.

``roost ctl gate open|close|auto GATE [PARTITION] [--ttl SECONDS]`` forces one partition, or a
whole gate (every partition, present and future), open (calls fail fast) or closed (calls go
through whatever happens), for SECONDS or until ``gate auto`` hands it back to the trip
policies. The command runs on one node; the decision reaches every node of the cluster over
the mesh (:mod:`roost.gate.cluster`), and each node lets the TTL run out on its own clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from roost.admin import render
from roost.admin.commands import Arg, CommandError, command

if TYPE_CHECKING:
    from roost.core.server import Server

KNOWN_GATES: Final = ("storage",)  # for shell completion


def _percent(rate: float) -> str:
    return f"{rate * 100:.0f}%"


def _gate_row(row: Mapping[str, Any]) -> dict[str, Any]:
    state = row["state"]
    override = row["override"]
    if override is not None and override["ttl"] is not None:
        state += f" ({render.duration(override['ttl'])})"
    elif row["machine"] == "open":
        state += f" ({row['open_for']:g}s)"
    trip = row["last_trip"]
    last = None
    if trip is not None:
        last = trip["reason"] + (f" on {trip['node']}" if trip["node"] else "")
    return {
        **row,
        "state": state,
        "failure_rate": _percent(row["failure_rate"]),
        "slow_rate": _percent(row["slow_rate"]),
        "last_trip": last,
    }


_GATES = render.Table(
    [
        ("gate", "GATE"),
        ("partition", "PARTITION"),
        ("state", "STATE"),
        ("failure_rate", "FAILED"),
        ("slow_rate", "SLOW"),
        ("window_calls", "IN WINDOW"),
        ("calls", "CALLS"),
        ("rejected", "REFUSED"),
        ("last_trip", "LAST TRIP"),
    ],
    row=_gate_row,
)


@command(
    "gates",
    "the circuit breakers: each gate and partition, state, rates, calls, last trip",
    render=_GATES,
    fanout=True,
    cluster=True,
)
async def gates(node: Server) -> list[dict[str, Any]]:
    return node.gates.statistics()


def _render_forced(result: Mapping[str, Any]) -> str:
    subject = result["gate"] + (f"[{result['partition']}]" if result["partition"] else "")
    if result["mode"] == "auto":
        return f"{subject}: automatic"
    until = f" for {render.duration(result['ttl'])}" if result["ttl"] else " until `gate auto`"
    return f"{subject}: forced {result['mode']}{until}"


def _force(
    node: Server, mode: str, gate: str, partition: str | None, ttl: float | None
) -> dict[str, Any]:
    found = node.gates.get(gate)
    if found is None:
        known = ", ".join(sorted(g.name for g in node.gates)) or "none"
        raise CommandError("not-found", f"no gate {gate!r} (gates: {known})")
    if ttl is not None and not ttl > 0:
        raise CommandError("bad-arguments", "--ttl must be a positive number of seconds")
    if mode == "auto" and ttl is not None:
        raise CommandError("bad-arguments", "`gate auto` takes no --ttl")
    found.force(partition or None, mode, ttl)
    return {"gate": gate, "partition": partition or "", "mode": mode, "ttl": ttl}


_GATE = Arg("gate", "the gate, e.g. storage", hints=KNOWN_GATES)
_PARTITION = Arg("partition", "one partition (a database); default: the whole gate", required=False)
_TTL = Arg(
    "ttl",
    "seconds until it returns to automatic (default: until `gate auto`)",
    type=float,
    required=False,
    flag=True,
)


@command(
    "gate open",
    "force a gate or partition open: its calls fail fast, on every node",
    _GATE,
    _PARTITION,
    _TTL,
    render=_render_forced,
    audit=True,
)
async def gate_open(
    node: Server, gate: str, partition: str | None, ttl: float | None
) -> dict[str, Any]:
    return _force(node, "open", gate, partition, ttl)


@command(
    "gate close",
    "force a gate or partition closed: its calls go through whatever fails, on every node",
    _GATE,
    _PARTITION,
    _TTL,
    render=_render_forced,
    audit=True,
)
async def gate_close(
    node: Server, gate: str, partition: str | None, ttl: float | None
) -> dict[str, Any]:
    return _force(node, "closed", gate, partition, ttl)


@command(
    "gate auto",
    "hand a gate or partition back to its trip policies, on every node",
    _GATE,
    _PARTITION,
    render=_render_forced,
    audit=True,
)
async def gate_auto(node: Server, gate: str, partition: str | None) -> dict[str, Any]:
    return _force(node, "auto", gate, partition, None)
