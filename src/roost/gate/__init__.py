"""Gating: partitioned circuit breakers around every dependency roost calls.

When a database stalls or a remote service starts timing out, roost must fail fast for the
part that is broken, keep serving everything else, recover by itself, and let operators see
and override what is happening. A *gate* guards one dependency (``storage``); it is
partitioned by key (a database, a shard, a remote host), and each (gate, partition) is a
circuit breaker of its own, so that one failing database does not stop calls to the others.

Layers, lowest first:

- :mod:`roost.gate.machine` — the state machine as a table (closed, open, half-open) and the
  sliding window of outcomes;
- :mod:`roost.gate.policy` — the thresholds: consecutive failures, failure rate, slow-call
  rate, concurrency limit, open period, trial calls, the safety valve;
- :mod:`roost.gate.core` — one gate's partitions and decisions, Sans-I/O: fed calls, outcomes,
  operators' overrides, peers' reports and the time; yields :class:`Change` records;
- :mod:`roost.gate.gate` — :class:`Gate`, the asyncio face (``async with gate.call(p)``);
- :mod:`roost.gate.registry` — :class:`Gates`, a node's gates, configured from ``[gates]``;
- :mod:`roost.gate.cluster` — the gates of all nodes agree, over the mesh;
- :mod:`roost.gate.storage` — :class:`GatedStorage`, the store behind the ``storage`` gate.

Decisions are explained: every trip keeps the policy that fired, a sentence and the numbers it
saw (:class:`Trip`), and ``roost ctl gates`` shows them.
"""

from roost.gate.core import Change, GateCore, Outcome, Override, Partition, Trip
from roost.gate.errors import GateError, GateFull, GateOpen, GateRejected, GateStateError
from roost.gate.gate import Gate, GateCall
from roost.gate.machine import TRANSITIONS, Event, State, Window, transition
from roost.gate.policy import Policy
from roost.gate.registry import Gates, policy_of

__all__ = [
    "TRANSITIONS",
    "Change",
    "Event",
    "Gate",
    "GateCall",
    "GateCore",
    "GateError",
    "GateFull",
    "GateOpen",
    "GateRejected",
    "GateStateError",
    "Gates",
    "Outcome",
    "Override",
    "Partition",
    "Policy",
    "State",
    "Trip",
    "Window",
    "policy_of",
    "transition",
]
