"""Stream management in a cluster: a phone that loses its connection to one node and comes
back through another, which cannot resume a session it does not hold (XEP-0198 resumption is
per node). Nothing queued for the old session may be lost or wait for its window to close.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from roost.testing.rawclient import RawClient
from roost.testing.server import RunningCluster, running_cluster
from roost.testing.smclient import SMClient
from roost.xmpp.element import Element
from roost.xmpp.jid import parse_jid

ALICE = "alice@localhost/sm"


class Inbox:
    """Message bodies an SMClient received, with a way to wait for a count."""

    def __init__(self, client: SMClient) -> None:
        self.bodies: list[str] = []
        self.changed = asyncio.Event()
        client.on_stanza = self._on_stanza

    def _on_stanza(self, stanza: Element) -> None:
        if stanza.name == "message":
            self.bodies.append(stanza.find_text("body") or "")
            self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.bodies) < count:
                self.changed.clear()
                await self.changed.wait()


def _everywhere(cluster: RunningCluster, node: int) -> bool:
    """Every node routes Alice's resource to ``node``'s session."""
    owner = cluster[node].server.cluster.name  # type: ignore[union-attr]
    jid = parse_jid(ALICE)
    for each in cluster.nodes:
        route = each.server.sessions.get(jid)
        where = getattr(route, "node", None) or each.server.cluster.name  # type: ignore[union-attr]
        if route is None or not route.available or where != owner:
            return False
    return True


async def test_a_session_not_resumable_on_another_node_hands_its_queue_to_the_new_one(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, nodes=2) as cluster:
        await cluster[0].create_user("alice")
        await cluster[0].create_user("bob")
        alice = SMClient(cluster[0].host, cluster[0].port, "alice", cert=cluster[0].cert)
        inbox = Inbox(alice)
        await alice.start()
        await alice.send("<presence/>")
        bob = await RawClient.logged_in(
            cluster[1].host, cluster[1].port, "bob", cert=cluster[1].cert
        )
        await cluster.until(lambda: _everywhere(cluster, 0))
        for i in range(3):  # fewer than make the server ask for an ack: none is given
            await bob.send(f"<message to='{ALICE}' type='chat'><body>m{i}</body></message>")
        await inbox.until(3)
        detached = asyncio.Event()
        cluster[0].server.hooks.add("c2s.detached", lambda session: detached.set())
        alice.abort()
        await detached.wait()
        for i in range(3, 5):  # queued for the detached session on node 1
            await bob.send(f"<message to='{ALICE}' type='chat'><body>m{i}</body></message>")
        await bob.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        await bob.expect("iq")
        # Back through node 2, which holds no such session: a new one, same resource.
        alice.port = cluster[1].port
        assert not await alice.resume()
        await alice.send("<presence/>")
        # The old session gives way to the newer login (a conflict, settled on node 1), and
        # what it held unacknowledged follows the resource to node 2 at once.
        await inbox.until(8)
        assert inbox.bodies == ["m0", "m1", "m2", "m0", "m1", "m2", "m3", "m4"]
        assert _everywhere(cluster, 1)
