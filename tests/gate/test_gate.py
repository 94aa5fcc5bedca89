"""The asyncio face of a gate, and a node's registry of gates."""

from __future__ import annotations

import asyncio

import pytest

from roost.gate import Change, Gate, GateOpen, Gates, Policy, State
from roost.gate.testing import VirtualClock


class Boom(Exception):
    pass


def failing_gate(clock: VirtualClock, **policy: float) -> Gate:
    return Gate("storage", Policy(**policy), clock=clock)  # type: ignore[arg-type]


async def fail(gate: Gate, times: int, partition: str = "db") -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            async with gate.call(partition):
                raise Boom("disk on fire")


async def test_a_call_that_raises_counts_as_a_failure_and_the_error_goes_on() -> None:
    gate = failing_gate(VirtualClock())
    await fail(gate, 1)
    [row] = gate.statistics()
    assert (row["calls"], row["failures"]) == (1, 1)
    assert row["last_error"] == "Boom: disk on fire"


async def test_an_open_gate_refuses_without_calling_the_dependency() -> None:
    clock = VirtualClock()
    gate = failing_gate(clock)
    await fail(gate, 5)
    called = []

    async def dependency() -> str:
        called.append(True)
        return "answer"

    with pytest.raises(GateOpen) as raised:
        await gate.run("db", dependency)
    assert raised.value.retry_after == pytest.approx(5.0)
    assert called == []
    clock.advance(5.0)
    assert await gate.run("db", dependency) == "answer"
    assert gate.state("db") == "half-open"


async def test_run_passes_arguments_through() -> None:
    gate = failing_gate(VirtualClock())

    async def add(a: int, b: int, *, c: int) -> int:
        return a + b + c

    assert await gate.run("db", add, 1, 2, c=3) == 6


async def test_the_failure_predicate_tells_answers_from_failures() -> None:
    gate = Gate("storage", clock=VirtualClock(), failure=lambda exc: not isinstance(exc, KeyError))
    for _ in range(10):
        with pytest.raises(KeyError):
            async with gate.call("db"):
                raise KeyError("no such row")
    assert gate.state("db") == "closed"
    [row] = gate.statistics()
    assert (row["calls"], row["failures"]) == (10, 0)


async def test_a_cancelled_call_counts_as_nothing() -> None:
    gate = failing_gate(VirtualClock())
    entered = asyncio.Event()

    async def stuck() -> None:
        async with gate.call("db"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(stuck())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [row] = gate.statistics()
    assert (row["calls"], row["in_flight"]) == (0, 0)


async def test_a_call_past_the_timeout_is_abandoned_and_counts_as_a_failure() -> None:
    gate = Gate("storage", Policy(call_timeout=0.01, consecutive_failures=1))
    with pytest.raises(TimeoutError):
        async with gate.call("db"):
            await asyncio.Event().wait()
    assert gate.state("db") == "open"
    [row] = gate.statistics()
    assert row["last_error"] == "TimeoutError"


async def test_a_hung_call_times_out_after_an_earlier_call_ended_in_time() -> None:
    gate = Gate("storage", Policy(call_timeout=0.02, consecutive_failures=0))
    async with gate.call("db"):  # the watchdog is set for this call's deadline
        await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with gate.call("db"):
            await asyncio.Event().wait()
    [row] = gate.statistics()
    assert (row["calls"], row["failures"], row["in_flight"]) == (2, 1, 0)


async def test_a_timed_call_cancelled_from_outside_is_cancelled_not_timed_out() -> None:
    gate = Gate("storage", Policy(call_timeout=60.0))
    entered = asyncio.Event()

    async def stuck() -> None:
        async with gate.call("db"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(stuck())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [row] = gate.statistics()
    assert (row["calls"], row["failures"], row["in_flight"]) == (0, 0, 0)


async def test_a_call_within_the_timeout_is_not_disturbed() -> None:
    gate = Gate("storage", Policy(call_timeout=60.0))
    async with gate.call("db"):
        await asyncio.sleep(0)
    assert gate.statistics()[0]["failures"] == 0


async def test_listeners_hear_every_change_and_one_failing_does_not_stop_the_others() -> None:
    clock = VirtualClock()
    gate = failing_gate(clock)
    heard: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("listener bug")

    gate.on_change(broken)
    gate.on_change(heard.append)
    await fail(gate, 5)
    clock.advance(5.0)
    gate.force("db", "open", 10.0, by="alice")
    assert [(c.event, c.state) for c in heard] == [("trip", State.OPEN), ("override", State.OPEN)]
    gate.remove_listener(broken)
    gate.remove_listener(broken)
    assert gate.state("db") == "forced-open"
    assert [c.event for c in heard[2:]] == ["cool-down"]  # noticed by looking
    assert repr(gate) == "<Gate <GateCore 'storage' partitions=1 open=1>>"


async def test_a_peer_report_reaches_the_listeners_with_its_node() -> None:
    gate = failing_gate(VirtualClock())
    heard: list[Change] = []
    gate.on_change(heard.append)
    gate.remote("db", State.OPEN, node="node3", open_for=2.0)
    assert gate.state("db") == "open"
    assert [(c.event, c.node) for c in heard] == [("trip", "node3")]


async def test_the_registry_creates_each_gate_once_with_the_current_policy() -> None:
    gates = Gates(Policy(open_for=7.0), clock=VirtualClock(), node="node1")
    storage = gates.gate("storage")
    assert gates.gate("storage") is storage
    assert storage.policy.open_for == 7.0
    gates.configure(Policy(open_for=9.0))
    assert storage.policy.open_for == 9.0
    assert gates.gate("push").policy.open_for == 9.0
    assert [g.name for g in gates] == ["storage", "push"]
    assert len(gates) == 2
    assert gates.get("nothing") is None


async def test_the_registry_tells_waiters_and_listeners_of_changes() -> None:
    gates = Gates(clock=VirtualClock())
    gate = gates.gate("storage")
    heard: list[Change] = []
    gates.on_change(heard.append)
    changed = gates.changed()
    await fail(gate, 5)
    await changed
    assert [c.event for c in heard] == ["trip"]
    gates.remove_listener(heard.append)


async def test_the_probe_rank_reaches_every_gate() -> None:
    gates = Gates(clock=VirtualClock())
    first = gates.gate("storage")
    gates.set_probe_rank(2)
    assert first.core.probe_rank == 2
    assert gates.gate("push").core.probe_rank == 2


async def test_registry_statistics_are_sorted_by_gate_and_partition() -> None:
    gates = Gates(clock=VirtualClock())
    for gate, partition in [("storage", "b"), ("push", "x"), ("storage", "a")]:
        async with gates.gate(gate).call(partition):
            pass
    rows = gates.statistics()
    assert [(r["gate"], r["partition"]) for r in rows] == [
        ("push", "x"),
        ("storage", "a"),
        ("storage", "b"),
    ]
