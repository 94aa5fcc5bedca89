"""roost.cluster.mesh under failure: cut links, silent and slow peers, garbage, restarts.

Each failure is injected into one link of a real three-node mesh; the tests check that it is
detected (peer_down, with a logged reason), that the link comes back (peer_up again), and that
the rest of the mesh is untouched. Short heartbeat and backoff settings stand in for time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from roost.cluster.mesh import Mesh
from roost.cluster.mesh_link import Link
from roost.cluster.mesh_testing import Inbox, LocalCluster, LogWatch


def link(mesh: Mesh, peer: str) -> Link:
    """The established link from ``mesh`` to ``peer`` (a test hook into the driver)."""
    return mesh._links[peer]


def transport(mesh: Mesh, peer: str) -> asyncio.Transport:
    """The TCP transport under that link."""
    result = link(mesh, peer).transport
    assert result is not None
    return result


def raw_frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


async def three_nodes(cluster: LocalCluster) -> tuple[Mesh, Mesh, Mesh]:
    a = await cluster.start("a")
    b = await cluster.start("b", seeds=["a"])
    c = await cluster.start("c", seeds=["a"])
    await cluster.fully_meshed()
    return a, b, c


async def assert_carries(sender: Mesh, inbox: Inbox, receiver: str, message: object) -> None:
    assert sender.send(receiver, inbox.channel, message)
    assert await inbox.get() == (sender.node, message)


async def test_a_cut_link_is_detected_and_reestablished(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        a, b, _ = await three_nodes(cluster)
        inbox = Inbox(b, "x")
        first = a.peers()["b"]
        transport(a, "b").abort()  # the network drops the connection
        assert (await cluster.events["a"].next("down", "b")).incarnation == first.incarnation
        await cluster.events["b"].next("down", "a")
        back = await cluster.events["a"].next("up", "b")
        await cluster.events["b"].next("up", "a")
        assert back.incarnation == first.incarnation  # same process: a reconnection
        await assert_carries(a, inbox, "b", "after the cut")
        assert cluster.events["c"].count("down", "a") == cluster.events["c"].count("down", "b") == 0


async def test_a_peer_that_stops_answering_heartbeats_is_declared_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        a = await cluster.start("a")
        # b's own patience is long: a hung node does not judge its peers, it is judged.
        b = await cluster.start("b", seeds=["a"], heartbeat_timeout=60.0)
        await cluster.start("c", seeds=["a"])
        await cluster.fully_meshed()
        # b hangs on its link to a: it reads nothing from a and sends nothing to a.
        transport(b, "a").pause_reading()
        monkeypatch.setattr(link(b, "a"), "send", lambda frame: False)
        with LogWatch() as logs:
            await cluster.events["a"].next("down", "b")
            record = await logs.wait_for("peer 'b'", "silent", "declaring it down")
        assert record.levelname == "WARNING"
        assert a.statistics().heartbeat_timeouts >= 1
        await cluster.events["b"].next("down", "a")
        await cluster.events["a"].next("up", "b")
        await cluster.events["b"].next("up", "a")
        inbox = Inbox(a, "x")
        await assert_carries(b, inbox, "a", "awake again")
        assert cluster.events["c"].count("down", "a") == cluster.events["c"].count("down", "b") == 0


async def test_a_slow_peer_over_the_buffer_bound_is_disconnected_then_reconnected(
    tmp_path: Path,
) -> None:
    async with LocalCluster(
        tmp_path, ["a", "b", "c"], max_frame_size=256 * 1024, max_buffer=1024 * 1024
    ) as cluster:
        a, b, _ = await three_nodes(cluster)
        transport(b, "a").pause_reading()  # b stops reading from a
        chunk = b"x" * (64 * 1024)
        with LogWatch() as logs:
            # The kernel's socket buffers absorb some megabytes first; then a's own buffer
            # grows until the bound trips. Yield after each send so that writes really happen.
            for _ in range(5000):
                if not a.send("b", "bulk", chunk):
                    break
                await asyncio.sleep(0)
            else:
                pytest.fail("a kept buffering for a peer that does not read")
            record = await logs.wait_for("closing the link to 'b'", "peer too slow")
        assert record.levelname == "WARNING"
        assert a.statistics().slow_peer_disconnects == 1
        await cluster.events["a"].next("down", "b")
        await cluster.events["b"].next("down", "a")
        await cluster.events["a"].next("up", "b")
        await cluster.events["b"].next("up", "a")
        inbox = Inbox(b, "x")
        await assert_carries(a, inbox, "b", "caught up")
        assert cluster.events["c"].count("down", "a") == 0


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        pytest.param(raw_frame(b"\xc1\x00\x01"), "undecodable frame", id="corrupt"),
        pytest.param(b"\x7f\xff\xff\xff", "exceeds the limit", id="oversized"),
        pytest.param(
            raw_frame(msgspec.msgpack.encode(["gossip", {"x": 1}])),
            "unknown frame type 'gossip'",
            id="unknown-type",
        ),
        pytest.param(
            raw_frame(msgspec.msgpack.encode(["hello", "a", 1, 1, [], 1])),
            "a second hello",
            id="second-hello",
        ),
    ],
)
async def test_a_bad_frame_closes_the_link_with_a_reason_and_it_comes_back(
    tmp_path: Path, garbage: bytes, reason: str
) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        a, b, _ = await three_nodes(cluster)
        inbox = Inbox(b, "x")
        with LogWatch() as logs:
            link(a, "b")._queue(garbage)  # below the framing layer, inside TLS
            record = await logs.wait_for("closing the link to 'a'", "protocol error", reason)
            # a learns why from b's bye.
            await logs.wait_for("peer 'b'", "down: closed by the peer: protocol error", reason)
        assert record.levelname == "WARNING"
        assert b.statistics().protocol_errors == 1
        await cluster.events["a"].next("down", "b")
        await cluster.events["b"].next("down", "a")
        await cluster.events["a"].next("up", "b")
        await cluster.events["b"].next("up", "a")
        await assert_carries(a, inbox, "b", "still friends")
        assert cluster.events["c"].count("down", "a") == cluster.events["c"].count("down", "b") == 0


async def test_a_restarted_node_comes_back_with_a_new_incarnation(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        a, _, c = await three_nodes(cluster)
        before = a.peers()["c"].incarnation
        await c.stop()
        down = await cluster.events["a"].next("down", "c")
        assert down.incarnation == before
        await cluster.events["b"].next("down", "c")
        # The same node, a new process: same certificate, same name, new incarnation.
        del cluster.meshes["c"]
        c2 = await cluster.start("c", seeds=["b"])
        up = await cluster.events["a"].next("up", "c")
        assert up.incarnation == c2.incarnation != before
        await cluster.fully_meshed()


async def test_a_stopping_node_says_goodbye(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        b = await cluster.start("b", seeds=["a"])
        await cluster.fully_meshed()
        with LogWatch() as logs:
            await b.stop()
            await logs.wait_for("peer 'b'", "down: closed by the peer: node stopping")
        await cluster.events["b"].next("down", "a")  # the stopping node's users hear it too
        assert a.peers() == {}


async def test_a_node_that_is_down_is_redialled_until_it_returns(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        await cluster.start("a")
        b = await cluster.start("b", seeds=["a"])
        await cluster.fully_meshed()
        port = b.address[1]
        await b.stop()
        await cluster.events["a"].next("down", "b")
        with LogWatch() as logs:
            await logs.wait_for("cannot reach 'b'")  # a keeps trying, with backoff
        del cluster.meshes["b"]
        await cluster.start("b", listen=("127.0.0.1", port))  # no seeds: a must find it
        await cluster.events["a"].next("up", "b")


async def test_disconnect_closes_a_link_that_then_comes_back(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        await cluster.start("b", seeds=["a"])
        await cluster.fully_meshed()
        assert a.disconnect("b", "maintenance")
        assert not a.disconnect("nobody")
        await cluster.events["b"].next("down", "a")
        await cluster.events["b"].next("up", "a")
