"""roost.cluster.mesh: nodes form a full mesh over mutual TLS and carry messages on channels.

Every test runs real meshes in this process on loopback, with real TLS, certificates from a
real cluster CA, and short heartbeat/backoff settings; tests wait for events, never for time.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import msgspec
import pytest

from roost.cluster.ca import ClusterFiles, init_cluster, issue
from roost.cluster.framing import Hello, LocalProtocolError
from roost.cluster.mesh import Mesh, parse_address
from roost.cluster.mesh_testing import FAST, Inbox, LocalCluster, LogWatch, make_cluster
from roost.cluster.mesh_tls import CredentialsError


class Join(msgspec.Struct, tag="join"):
    group: str
    member: int


class Leave(msgspec.Struct, tag="leave"):
    group: str


PgMessage = Join | Leave


# -- forming the mesh ---------------------------------------------------------------------------


async def test_nodes_joining_through_one_seed_form_a_full_mesh(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        await cluster.start("a")
        await cluster.start("b", seeds=["a"])
        await cluster.start("c", seeds=["a"])
        await cluster.fully_meshed()
        assert set(cluster.meshes["b"].peers()) == {"a", "c"}
        assert set(cluster.meshes["c"].members()) == {"a", "b"}
        # c knew only a, yet dials b at the address b advertises.
        assert cluster.meshes["c"].members()["b"] == cluster.meshes["b"].address


async def test_members_are_learned_transitively(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c", "d"]) as cluster:
        await cluster.start("a")
        await cluster.start("b", seeds=["a"])
        await cluster.start("c", seeds=["b"])
        await cluster.start("d", seeds=["c"])
        await cluster.fully_meshed()


async def test_two_nodes_dialling_each_other_at_once_keep_one_link(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a, b = cluster.mesh("a"), cluster.mesh("b")
        await a.start()
        await b.start()
        # Each seeds the other: both dial at the same moment.
        a.seeds.append(b.address)
        b.seeds.append(a.address)
        a._spawn(a._join(b.address))
        b._spawn(b._join(a.address))
        await cluster.fully_meshed()
        inbox_a, inbox_b = Inbox(a, "echo"), Inbox(b, "echo")
        assert b.send("a", "echo", "ping")
        assert await inbox_a.get() == ("b", "ping")
        assert a.send("b", "echo", "pong")
        assert await inbox_b.get() == ("a", "pong")
        # Both ends agree on which connection is the link: one dialled it, the other accepted.
        assert a.peers()["b"].outgoing != b.peers()["a"].outgoing
        assert [kind for kind, _ in cluster.events["a"].history] == ["up"]
        assert [kind for kind, _ in cluster.events["b"].history] == ["up"]


@pytest.mark.parametrize("dialler", ["a", "b"])
async def test_a_second_connection_between_linked_nodes_is_refused_as_a_duplicate(
    tmp_path: Path, dialler: str
) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        await cluster.start("a")
        await cluster.start("b", seeds=["a"])
        await cluster.fully_meshed()
        other = "b" if dialler == "a" else "a"
        mesh = cluster.meshes[dialler]
        extra = await mesh._dial(cluster.meshes[other].address, expect=other)
        assert extra is not None
        assert not extra.established
        assert extra.reason is not None
        assert "duplicate link" in extra.reason
        # The standing link was never disturbed: a (the arbiter) kept it.
        for name in ("a", "b"):
            assert [kind for kind, _ in cluster.events[name].history] == ["up"]
        inbox = Inbox(cluster.meshes[other], "x")
        assert mesh.send(other, "x", "still one link")
        assert await inbox.get() == (dialler, "still one link")


async def test_a_seed_that_is_this_node_is_ignored(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        with LogWatch() as logs:
            a._spawn(a._join(a.address))
            await logs.wait_for("connected to ourselves")
        await cluster.start("b", seeds=["a"])
        await cluster.fully_meshed()
        assert set(a.peers()) == {"b"}


async def test_peers_carry_the_incarnation_and_protocol(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        b = await cluster.start("b", seeds=["a"], capabilities=["route", "x"])
        peer = await cluster.events["a"].next("up", "b")
        assert peer.incarnation == b.incarnation != a.incarnation
        assert peer.version == 1
        assert peer.capabilities == frozenset()  # a lists none
        assert a.peers() == {"b": peer}


# -- messages -----------------------------------------------------------------------------------


async def test_messages_flow_on_channels_both_ways(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        a = await cluster.start("a")
        b = await cluster.start("b", seeds=["a"])
        c = await cluster.start("c", seeds=["a"])
        pg_a, pg_b = Inbox(a, "pg:default", PgMessage), Inbox(b, "pg:default", PgMessage)
        admin_b = Inbox(b, "admin")
        await cluster.fully_meshed()

        assert a.send("b", "pg:default", Join("room", 7))
        assert await pg_b.get() == ("a", Join("room", 7))
        assert b.send("a", "pg:default", Leave("room"))
        assert await pg_a.get() == ("b", Leave("room"))
        assert c.send("b", "admin", {"cmd": "stats", "args": [1, 2.5, None, b"\x00"]})
        assert await admin_b.get() == ("c", {"cmd": "stats", "args": [1, 2.5, None, b"\x00"]})


async def test_messages_between_two_nodes_keep_their_order(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        b = await cluster.start("b", seeds=["a"])
        inbox = Inbox(b, "seq")
        await cluster.fully_meshed()
        for i in range(500):
            assert a.send("b", "seq", i)
        assert [(await inbox.get())[1] for _ in range(500)] == list(range(500))


async def test_broadcast_reaches_every_peer(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        a = await cluster.start("a")
        inboxes = {}
        for name in ("b", "c"):
            inboxes[name] = Inbox(cluster.mesh(name, seeds=["a"]), "news")
            await cluster.meshes[name].start()
        await cluster.fully_meshed()
        assert a.broadcast("news", Join("g", 1)) == 2
        for inbox in inboxes.values():
            node, message = await inbox.get()
            assert node == "a"
            assert msgspec.convert(message, Join) == Join("g", 1)


async def test_sending_to_a_node_without_a_link_returns_false(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a"]) as cluster:
        a = await cluster.start("a")
        assert a.send("nobody", "x", 1) is False
        assert a.broadcast("x", 1) == 0


async def test_an_unencodable_message_raises_at_the_sender(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        await cluster.start("b", seeds=["a"])
        await cluster.fully_meshed()
        with pytest.raises(LocalProtocolError):
            a.send("b", "x", object())
        with pytest.raises(LocalProtocolError, match="exceeds the limit"):
            a.send("b", "x", b"x" * (a.max_frame_size + 1))
        assert "b" in a.peers()


async def test_a_message_for_a_channel_nobody_subscribed_is_dropped(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        b = await cluster.start("b", seeds=["a"])
        inbox = Inbox(b, "known")
        await cluster.fully_meshed()
        assert a.send("b", "unknown", 1)
        assert a.send("b", "known", 2)
        assert await inbox.get() == ("a", 2)
        assert b.statistics().unrouted == 1
        assert "a" in b.peers()


async def test_a_failing_handler_is_logged_and_the_link_goes_on(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        b = await cluster.start("b", seeds=["a"])
        received: list[int] = []

        def handler(node: str, message: int) -> None:
            if message == 0:
                raise RuntimeError("boom")
            received.append(message)

        b.subscribe("x", handler, int)
        done = Inbox(b, "done")
        await cluster.fully_meshed()
        with LogWatch() as logs:
            a.send("b", "x", 0)
            a.send("b", "x", 1)
            a.send("b", "done", True)
            await done.get()
        assert received == [1]
        assert any("subscriber of channel 'x' failed" in m for m in logs.messages())
        assert cluster.events["b"].count("down", "a") == 0


async def test_a_message_that_does_not_fit_the_channel_type_closes_the_link(
    tmp_path: Path,
) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        b = await cluster.start("b", seeds=["a"])
        inbox = Inbox(b, "pg", PgMessage)
        await cluster.fully_meshed()
        with LogWatch() as logs:
            a.send("b", "pg", {"group": "no tag"})
            await logs.wait_for("message on channel 'pg' does not decode")
        await cluster.events["a"].next("down", "b")
        await cluster.events["a"].next("up", "b")
        assert a.send("b", "pg", Leave("g"))
        assert await inbox.get() == ("a", Leave("g"))


def test_subscribing_twice_to_a_channel_is_an_error(tmp_path: Path) -> None:
    files = make_cluster(tmp_path, ["a"])
    mesh = Mesh("a", files["a"])
    mesh.subscribe("x", lambda node, message: None)
    with pytest.raises(ValueError, match="already"):
        mesh.subscribe("x", lambda node, message: None)


# -- who may join -------------------------------------------------------------------------------


async def test_a_node_with_a_certificate_from_another_ca_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rogue_files = make_cluster(tmp_path / "other", ["d"])
    async with LocalCluster(tmp_path / "ours", ["a", "b"]) as cluster:
        a = await cluster.start("a")
        await cluster.start("b", seeds=["a"])
        await cluster.fully_meshed()
        rogue = Mesh("d", rogue_files["d"], listen=("127.0.0.1", 0), seeds=[a.address], **FAST)
        with LogWatch() as logs:
            await rogue.start()
            try:
                record = await logs.wait_for("link from", "refused", "TLS handshake failed")
            finally:
                await rogue.stop()
        assert record.levelname == "WARNING"
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        # Both ends refuse: a (the rogue's certificate is not ours) and the rogue (nor is a's).
        assert any("link from" in m and "TLS handshake failed" in m for m in refusals)
        assert any("link to" in m and "certificate verification failed" in m for m in refusals)
        assert rogue.peers() == {}
        assert set(a.peers()) == {"b"}
        assert a.statistics().refused >= 1
        assert cluster.events["a"].count("down", "b") == 0


async def tls_client(
    address: tuple[str, int], ca: Path, cert: Path | None = None, key: Path | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TLS 1.3 client that trusts the cluster CA, with or without a certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return await asyncio.open_connection(*address, ssl=context)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), 10)
    except (ssl.SSLError, ConnectionError):
        return b""


async def test_a_certificate_the_ca_did_not_sign_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    foreign = init_cluster(tmp_path / "foreign", "a")  # even claiming a member's name
    async with LocalCluster(tmp_path / "ours", ["a"]) as cluster:
        a = await cluster.start("a")
        with LogWatch() as logs:
            reader, writer = await tls_client(
                a.address, cluster.files["a"].ca, foreign.cert, foreign.key
            )
            await logs.wait_for("refused", "certificate verification failed")
            assert await read_until_closed(reader) == b""  # closed without a hello
            writer.close()
        assert any(
            r.levelname == "WARNING" and "unable to get local issuer certificate" in r.getMessage()
            for r in caplog.records
        )


async def test_a_peer_without_a_client_certificate_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalCluster(tmp_path, ["a"]) as cluster:
        a = await cluster.start("a")
        with LogWatch() as logs:
            reader, writer = await tls_client(a.address, cluster.files["a"].ca)
            await logs.wait_for("refused", "peer did not return a certificate")
            assert await read_until_closed(reader) == b""
            writer.close()
        assert any(
            r.levelname == "WARNING" and "did not return a certificate" in r.getMessage()
            for r in caplog.records
        )
        assert a.peers() == {}


async def test_tls_below_1_3_is_refused(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a"]) as cluster:
        a = await cluster.start("a")
        files = cluster.files["a"]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cafile=str(files.ca))
        context.load_cert_chain(str(files.cert), str(files.key))
        with LogWatch() as logs:
            with pytest.raises(ssl.SSLError):
                await asyncio.open_connection(*a.address, ssl=context)
            await logs.wait_for("refused", "TLS handshake failed")


async def test_an_admin_certificate_cannot_join_as_a_node(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a"]) as cluster:
        a = await cluster.start("a")
        admin = issue(tmp_path / "ca", "ops", admin=True)
        with LogWatch() as logs:
            reader, writer = await tls_client(a.address, admin.ca, admin.cert, admin.key)
            await logs.wait_for("refused", "its certificate names no node")
            await read_until_closed(reader)
            writer.close()


async def test_a_node_claiming_another_name_than_its_certificate_is_refused(
    tmp_path: Path,
) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        a = await cluster.start("a")
        impostor = cluster.mesh("c", seeds=["a"])
        impostor._hello = Hello("b", 1, impostor.incarnation, (), 1)  # c's certificate, b's name
        with LogWatch() as logs:
            await impostor.start()
            await logs.wait_for("refused", "it says it is 'b' but its certificate names 'c'")
        assert a.peers() == {}


async def test_a_node_speaking_no_common_version_is_refused_on_both_sides(
    tmp_path: Path,
) -> None:
    async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:
        await cluster.start("a")
        await cluster.start("b", seeds=["a"])
        await cluster.fully_meshed()
        future = cluster.mesh("c", seeds=["a"])
        future._hello = Hello("c", 3, future.incarnation, (), 2)
        with LogWatch() as logs:
            await future.start()
            await logs.wait_for(
                "link from", "refused", "we speak version 1, 'c' speaks versions 2 to 3"
            )
            await logs.wait_for("link to", "refused", "'a' speaks version 1")
        assert set(cluster.meshes["a"].peers()) == {"b"}


async def test_a_mesh_will_not_start_with_someone_elses_certificate(tmp_path: Path) -> None:
    files = make_cluster(tmp_path, ["a", "b"])
    with pytest.raises(CredentialsError, match="names node 'b', not 'a'"):
        await Mesh("a", files["b"], listen=("127.0.0.1", 0)).start()
    with pytest.raises(CredentialsError, match="missing"):
        await Mesh("a", tmp_path / "nowhere", listen=("127.0.0.1", 0)).start()
    other = make_cluster(tmp_path / "other", ["a"])["a"]
    mixed = ClusterFiles(files["a"].ca, other.cert, other.key)
    with pytest.raises(CredentialsError, match="not signed"):
        await Mesh("a", mixed, listen=("127.0.0.1", 0)).start()


# -- odds and ends ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("10.0.0.1:7400", ("10.0.0.1", 7400)),
        ("node2.example", ("node2.example", 7400)),
        ("[::1]:7500", ("::1", 7500)),
        ("::1", ("::1", 7400)),
    ],
)
def test_join_addresses_parse(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", "host:", "host:x", "host:70000", ":7400"])
def test_bad_join_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(text)


async def test_statistics_count_frames_and_links(tmp_path: Path) -> None:
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        a = await cluster.start("a")
        b = await cluster.start("b", seeds=["a"])
        inbox = Inbox(b, "x")
        await cluster.fully_meshed()
        a.send("b", "x", "hello")
        await inbox.get()
        stats = a.statistics()
        assert stats.node == "a"
        assert stats.members == 1
        assert stats.links_up == 1
        link = stats.links["b"]
        assert link.incarnation == b.incarnation
        assert link.frames_out >= 3  # hello, welcome or members, and the message
        assert link.bytes_out > 0
        assert link.bytes_in > 0
