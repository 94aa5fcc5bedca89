"""A cluster in one process: three nodes on loopback, users spread over them, real clients."""

from __future__ import annotations

from pathlib import Path

from roost.testing.rawclient import RawClient
from roost.testing.server import RunningCluster, RunningServer, running_cluster


async def _online(node: RunningServer, user: str, resource: str = "r") -> RawClient:
    client = await RawClient.logged_in(
        node.host, node.port, user, cert=node.cert, resource=resource
    )
    await client.send("<presence/>")
    await client.expect("presence")
    return client


def _sees(cluster: RunningCluster, full_jid: str, available: bool = True) -> bool:
    from roost.xmpp.jid import parse_jid

    jid = parse_jid(full_jid)
    for node in cluster.nodes:
        route = node.server.sessions.get(jid)
        if route is None or route.available != available:
            return False
    return True


async def test_chat_between_users_on_different_nodes(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        await cluster[0].create_user("alice")
        await cluster[0].create_user("bob")
        alice = await _online(cluster[0], "alice")
        bob = await _online(cluster[2], "bob")
        await cluster.until(lambda: _sees(cluster, "bob@localhost/r"))
        for i in range(20):
            await alice.send(
                f"<message to='bob@localhost' type='chat' id='m{i}'><body>hi {i}</body></message>"
            )
        bodies = []
        for _ in range(20):
            message = await bob.expect("message")
            assert message.attrs["from"] == "alice@localhost/r"
            bodies.append(message.find_text("body"))
        assert bodies == [f"hi {i}" for i in range(20)]
        await cluster.until(lambda: _sees(cluster, "alice@localhost/r"))
        await bob.send("<message to='alice@localhost/r' type='chat'><body>back</body></message>")
        reply = await alice.expect("message")
        assert reply.find_text("body") == "back"
        forwarding = cluster[0].server.cluster.forwarder.statistics()  # type: ignore[union-attr]
        assert forwarding["forwarded"] >= 20


async def test_offline_message_across_nodes(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=2) as cluster:
        await cluster[0].create_user("alice")
        await cluster[0].create_user("bob")
        alice = await _online(cluster[0], "alice")
        await alice.send("<message to='bob@localhost' type='chat'><body>later</body></message>")
        await alice.send("<iq type='get' id='s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        await alice.expect("iq")
        bob = await RawClient.logged_in(
            cluster[1].host, cluster[1].port, "bob", cert=cluster[1].cert
        )
        await bob.send("<presence/>")
        message = await bob.expect("message")
        assert message.find_text("body") == "later"


async def _subscribe(a: RawClient, a_jid: str, b: RawClient, b_jid: str) -> None:
    """The RFC 6121 handshake both ways, with raw clients that approve at once."""
    await a.send(f"<presence to='{b_jid}' type='subscribe'/>")
    request = await b.expect("presence")
    while request.attrs.get("type") != "subscribe":
        request = await b.expect("presence")
    await b.send(f"<presence to='{a_jid}' type='subscribed'/>")
    await b.send(f"<presence to='{a_jid}' type='subscribe'/>")
    request = await a.expect("presence")
    while request.attrs.get("type") != "subscribe":
        request = await a.expect("presence")
    await a.send(f"<presence to='{b_jid}' type='subscribed'/>")


async def test_presence_and_probes_across_nodes(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=2) as cluster:
        await cluster[0].create_user("alice")
        await cluster[0].create_user("bob")
        alice = await _online(cluster[0], "alice", "a")
        bob = await _online(cluster[1], "bob", "b")
        await cluster.until(lambda: _sees(cluster, "bob@localhost/b"))
        await cluster.until(lambda: _sees(cluster, "alice@localhost/a"))
        await _subscribe(alice, "alice@localhost", bob, "bob@localhost")
        # A presence change on node 2 reaches the contact on node 1.
        await bob.send("<presence><status>on node 2</status></presence>")
        while True:
            presence = await alice.expect("presence")
            if presence.find_text("status") == "on node 2":
                break
        assert presence.attrs["from"] == "bob@localhost/b"
        # A new login of alice on node 1 probes bob, whose node answers.
        again = await RawClient.logged_in(
            cluster[0].host, cluster[0].port, "alice", cert=cluster[0].cert, resource="a2"
        )
        await again.send("<presence/>")
        while True:
            presence = await again.expect("presence")
            if presence.attrs.get("from") == "bob@localhost/b":
                break
        assert presence.find_text("status") == "on node 2"


async def test_the_same_full_jid_on_two_nodes_keeps_the_newest_login(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=2) as cluster:
        await cluster[0].create_user("alice")
        first = await _online(cluster[0], "alice", "phone")
        await cluster.until(lambda: _sees(cluster, "alice@localhost/phone"))
        second = await _online(cluster[1], "alice", "phone")
        assert await first.stream_error() == "conflict"
        await cluster.until(
            lambda: all(
                len(n.server.sessions.routes("alice@localhost")) == 1 for n in cluster.nodes
            )
        )
        await second.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert (await second.expect("iq")).attrs["type"] == "result"


async def test_roster_pushes_reach_resources_on_other_nodes(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=2) as cluster:
        await cluster[0].create_user("alice")
        phone = await _online(cluster[0], "alice", "phone")
        laptop = await _online(cluster[1], "alice", "laptop")
        for client in (phone, laptop):
            await client.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
            await client.expect("iq")
        await cluster.until(lambda: _sees(cluster, "alice@localhost/laptop"))
        await phone.send(
            "<iq type='set' id='s'><query xmlns='jabber:iq:roster'>"
            "<item jid='carol@localhost' name='Carol'/></query></iq>"
        )
        push = await laptop.expect("iq")
        while push.attrs.get("type") != "set":
            push = await laptop.expect("iq")
        item = push.find("query", "jabber:iq:roster").find("item", "jabber:iq:roster")  # type: ignore[union-attr]
        assert item is not None
        assert item.attrs["name"] == "Carol"
        # The laptop's node does not serve a stale roster afterwards.
        await laptop.send("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>")
        result = await laptop.expect("iq")
        while result.attrs.get("id") != "r2":
            result = await laptop.expect("iq")
        query = result.find("query", "jabber:iq:roster")
        assert query is not None
        assert [i.attrs["jid"] for i in query.elements()] == ["carol@localhost"]


def _carbons_flag(cluster: RunningCluster, full_jid: str) -> bool:
    from roost.xmpp.jid import parse_jid

    jid = parse_jid(full_jid)
    for node in cluster.nodes:
        route = node.server.sessions.get(jid)
        if route is None or not getattr(route, "data", {}).get("carbons.enabled"):
            return False
    return True


async def test_carbons_reach_devices_on_other_nodes(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=2) as cluster:
        await cluster[0].create_user("alice")
        await cluster[0].create_user("bob")
        phone = await _online(cluster[0], "alice", "phone")
        laptop = await _online(cluster[1], "alice", "laptop")
        bob = await _online(cluster[1], "bob")
        for device in (phone, laptop):
            await device.send("<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            assert (await device.expect("iq")).attrs["type"] == "result"
        await cluster.until(lambda: _carbons_flag(cluster, "alice@localhost/laptop"))
        await cluster.until(lambda: _carbons_flag(cluster, "alice@localhost/phone"))
        await cluster.until(lambda: _sees(cluster, "bob@localhost/r"))

        # Sent on node 0: the laptop on node 1 gets a <sent/> copy.
        await phone.send(
            "<message to='bob@localhost/r' type='chat'><body>from phone</body></message>"
        )
        assert (await bob.expect("message")).find_text("body") == "from phone"
        copy = await laptop.expect("message")
        sent = copy.find("sent", "urn:xmpp:carbons:2")
        assert sent is not None
        assert copy.attrs["to"] == "alice@localhost/laptop"

        # Bob on node 1 writes to the phone's full JID on node 0: the laptop gets <received/>.
        await bob.send(
            "<message to='alice@localhost/phone' type='chat'><body>to phone</body></message>"
        )
        assert (await phone.expect("message")).find_text("body") == "to phone"
        copy = await laptop.expect("message")
        assert copy.find("received", "urn:xmpp:carbons:2") is not None


async def test_the_shell_sees_the_session_registry_of_every_node(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=2) as cluster:
        await cluster[0].create_user("alice")
        alice = await _online(cluster[1], "alice", "phone")
        await cluster.until(lambda: _sees(cluster, "alice@localhost/phone"))
        for node in cluster.nodes:
            assert "sessions" in await node.eval("list(groups())")
            members = await node.eval("groups('sessions')['alice@localhost']")
            assert [member[:2] for member in members] == [("node2", "phone")]
        await alice.close()
