"""The gates of one node, by name, with one policy taken from the configuration.

The server owns a :class:`Gates` (``server.gates``). Code that calls a dependency asks it for
the dependency's gate (``server.gates.gate("storage")``), creating it on first use; the admin
commands list and force gates through it; the cluster (:mod:`roost.gate.cluster`) listens to
its changes and feeds it the peers'. Thresholds come from the ``[gates]`` settings
(:func:`policy_of`) and change with a configuration reload (:meth:`Gates.configure`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from roost.gate.core import Change
from roost.gate.gate import Clock, Gate, Listener, every_exception
from roost.gate.policy import Policy

if TYPE_CHECKING:
    from roost.config import ServerConfig


def policy_of(config: ServerConfig) -> Policy:
    """The gate policy the ``[gates]`` settings describe."""
    return Policy(
        consecutive_failures=config.gate_consecutive_failures,
        failure_rate=config.gate_failure_rate,
        slow_call_rate=config.gate_slow_call_rate,
        slow_call_threshold=config.gate_slow_call_threshold,
        minimum_calls=config.gate_minimum_calls,
        window=config.gate_window,
        open_for=config.gate_open_for,
        half_open_calls=config.gate_half_open_calls,
        max_concurrent=config.gate_max_concurrent,
        call_timeout=config.gate_call_timeout,
        max_open_share=config.gate_max_open_share,
    )


class Gates:
    """A node's gates. See the module docstring."""

    def __init__(
        self, policy: Policy | None = None, *, clock: Clock = time.monotonic, node: str = ""
    ) -> None:
        self.policy = policy if policy is not None else Policy()
        self.clock = clock
        self.node = node
        self.probe_rank = 0
        self._gates: dict[str, Gate] = {}
        self._listeners: list[Listener] = []
        self._waiters: list[asyncio.Future[None]] = []

    def gate(self, name: str, *, failure: Callable[[BaseException], bool] | None = None) -> Gate:
        """The gate called ``name``, created with the current policy when new."""
        found = self._gates.get(name)
        if found is None:
            found = Gate(
                name,
                self.policy,
                clock=self.clock,
                node=self.node,
                failure=failure or every_exception,
            )
            found.core.probe_rank = self.probe_rank
            found.on_change(self._changed)
            self._gates[name] = found
        elif failure is not None:
            found.failure = failure
        return found

    def get(self, name: str) -> Gate | None:
        return self._gates.get(name)

    def __iter__(self) -> Iterator[Gate]:
        return iter(list(self._gates.values()))

    def __len__(self) -> int:
        return len(self._gates)

    def configure(self, policy: Policy) -> None:
        """New thresholds for every gate (a configuration reload)."""
        self.policy = policy
        for gate in self._gates.values():
            gate.configure(policy)

    def set_probe_rank(self, rank: int) -> None:
        """This node's place among the reachable nodes (see :mod:`roost.gate.core`)."""
        self.probe_rank = rank
        for gate in self._gates.values():
            gate.core.probe_rank = rank

    def statistics(self) -> list[dict[str, Any]]:
        """One row per (gate, partition), sorted."""
        rows = [row for gate in self._gates.values() for row in gate.statistics()]
        return sorted(rows, key=lambda row: (row["gate"], row["partition"]))

    # -- changes ---------------------------------------------------------------------------------

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def changed(self) -> asyncio.Future[None]:
        """A future done at the next change of any gate (for tests and tools).

        Registered at once, so that no change between the call and the await slips by.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def _changed(self, change: Change) -> None:
        for listener in list(self._listeners):
            listener(change)  # Gate.flush logs what a listener raises
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def __repr__(self) -> str:
        return f"<Gates {sorted(self._gates)} rank={self.probe_rank}>"
