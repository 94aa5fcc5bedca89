"""Gates across a cluster: a trip anywhere opens the partition everywhere, one node probes,
forced states expire everywhere, a joining node learns the current states, and an old
operator decision cannot come back.

The full-server tests run three roost nodes in this process sharing one SQLite store (one
partition, ``roost.db``); the others run bare meshes. Every gate of a test shares one virtual
clock, so open periods and TTLs pass when the test says so. Waits end on gate changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from roost.cluster.mesh_testing import TIMEOUT, LocalCluster
from roost.gate import Gate, Gates, Policy
from roost.gate.cluster import CHANNEL, Forced, GateSync
from roost.gate.storage import STORAGE_GATE, GatedStorage, StorageUnavailable
from roost.gate.testing import VirtualClock
from roost.storage.base import StorageError
from roost.testing.server import RunningCluster, running_cluster


async def until(registries: list[Gates], condition: Callable[[], bool]) -> None:
    """Wait, on gate changes of any of ``registries``, until ``condition()`` holds."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            waits = [gates.changed() for gates in registries]
            try:
                if condition():
                    return
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()


def storage_gates(cluster: RunningCluster, clock: VirtualClock) -> list[Gate]:
    gates = [node.server.gates.gate(STORAGE_GATE) for node in cluster.nodes]
    for gate in gates:
        gate.clock = clock
    return gates


def registries(cluster: RunningCluster) -> list[Gates]:
    return [node.server.gates for node in cluster.nodes]


async def fail(gate: Gate, times: int, partition: str = "roost.db") -> None:
    for _ in range(times):
        with pytest.raises(StorageError):
            async with gate.call(partition):
                raise StorageError("disk I/O error")


async def test_a_trip_on_one_node_opens_the_partition_on_all_three(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        clock = VirtualClock(time.monotonic())
        gates = storage_gates(cluster, clock)
        broken = cluster[0].server.storage
        assert isinstance(broken, GatedStorage)
        await broken.inner.close()  # node1's path to the database is broken
        for _ in range(5):
            with pytest.raises(StorageError):
                await broken.user_exists("alice@localhost")
        await until(registries(cluster), lambda: all(g.state("roost.db") == "open" for g in gates))
        [row] = gates[1].statistics()
        trip = row["last_trip"]
        assert (trip["node"], trip["policy"], trip["reason"]) == (
            "node1",
            "consecutive_failures",
            "5 failures in a row",
        )
        assert trip["numbers"] == {"consecutive": 5, "threshold": 5}
        assert "is closed" in trip["error"]
        with pytest.raises(StorageUnavailable, match="open on node1: 5 failures in a row"):
            await cluster[2].server.storage.user_exists("alice@localhost")


async def test_one_node_probes_and_its_verdict_closes_the_partition_everywhere(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        clock = VirtualClock(time.monotonic())
        gates = storage_gates(cluster, clock)
        assert [g.core.probe_rank for g in gates] == [0, 1, 2]
        await fail(gates[1], 5)  # node2 trips it
        await until(registries(cluster), lambda: all(g.state("roost.db") == "open" for g in gates))
        clock.advance(Policy().open_for)
        for node in (cluster[1], cluster[2]):
            with pytest.raises(StorageUnavailable, match="another node makes the trial calls"):
                await node.server.storage.user_exists("alice@localhost")
        for _ in range(Policy().half_open_calls):
            assert not await cluster[0].server.storage.user_exists("alice@localhost")
        await until(
            registries(cluster), lambda: all(g.state("roost.db") == "closed" for g in gates)
        )
        assert await cluster[2].server.storage.user_exists("nobody@localhost") is False


async def test_a_forced_state_expires_after_its_ttl_on_every_node(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        clock = VirtualClock(time.monotonic())
        gates = storage_gates(cluster, clock)
        gates[2].force(None, "open", 30.0, by="alice")
        await until(
            registries(cluster), lambda: all(g.state("roost.db") == "forced-open" for g in gates)
        )
        [row] = gates[0].statistics()
        assert row["override"]["by"] == "alice"
        assert row["override"]["node"] == "node3"
        assert 0 < row["override"]["ttl"] <= 30.0
        clock.advance(30.0)
        assert [g.state("roost.db") for g in gates] == ["closed"] * 3
        gates[0].force("roost.db", "closed", None)
        await until(
            registries(cluster), lambda: all(g.state("roost.db") == "forced-closed" for g in gates)
        )
        gates[1].force(None, "auto")
        await until(
            registries(cluster), lambda: all(g.state("roost.db") == "closed" for g in gates)
        )


def gates_on(cluster: LocalCluster, name: str, clock: VirtualClock, wall: float) -> GateSync:
    """A node's gates, kept in step over its mesh (created before the mesh starts)."""
    mesh = cluster.mesh(name, seeds=[n for n in cluster.meshes if n != name][:1])
    return GateSync(mesh, Gates(clock=clock, node=name), wall=lambda: wall)


async def test_a_node_that_joins_learns_open_partitions_and_overrides(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        a = gates_on(cluster, "a", clock, 100.0)
        await a.mesh.start()
        b = gates_on(cluster, "b", clock, 100.0)
        await b.mesh.start()
        await cluster.fully_meshed()
        await fail(a.gates.gate("storage"), 5, partition="db1")
        b.gates.gate("storage").force("db2", "closed", 60.0, by="bob")
        await until(
            [a.gates, b.gates],
            lambda: (
                b.gates.gate("storage").state("db1") == "open"
                and a.gates.gate("storage").state("db2") == "forced-closed"
            ),
        )
        c = gates_on(cluster, "c", clock, 100.0)
        joined = c.gates.changed()
        await c.mesh.start()
        storage = c.gates.gate("storage")
        await until([c.gates], lambda: storage.state("db1") == "open")
        await until([c.gates], lambda: storage.state("db2") == "forced-closed")
        assert joined.done()
        trip = storage.core.get("db1").last_trip  # type: ignore[union-attr]
        assert trip is not None
        assert (trip.node, trip.reason) == ("a", "5 failures in a row")
        override = storage.core.get("db2").override  # type: ignore[union-attr]
        assert override is not None
        assert (override.by, override.node) == ("bob", "b")
        await cluster.fully_meshed()
        assert c.gates.probe_rank == 2
        assert a.statistics()["rank"] == 0


async def test_an_older_operator_decision_does_not_come_back(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = gates_on(cluster, "a", clock, 100.0)
        await a.mesh.start()
        b = gates_on(cluster, "b", clock, 200.0)
        await b.mesh.start()
        await cluster.fully_meshed()
        a.gates.gate("storage").force("db", "open", None)  # decided at 100
        await until([b.gates], lambda: b.gates.gate("storage").state("db") == "forced-open")
        b.gates.gate("storage").force("db", "auto")  # decided at 200
        await until([a.gates], lambda: a.gates.gate("storage").state("db") == "closed")
        # A node that missed the auto replays the decision of 150 (its snapshot, say), then
        # a newer one, which arrives after it on the same link.
        a.mesh.send("b", CHANNEL, Forced("storage", "db", "open", None, "old", 150.0, "a"))
        a.mesh.send("b", CHANNEL, Forced("storage", "other", "open", None, "new", 300.0, "a"))
        await until([b.gates], lambda: b.gates.gate("storage").state("other") == "forced-open")
        assert b.gates.gate("storage").state("db") == "closed"
