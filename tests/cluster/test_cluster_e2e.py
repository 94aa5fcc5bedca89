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
