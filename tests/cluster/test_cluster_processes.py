"""A cluster of real processes: users spread over three nodes, and one node killed under
traffic (``kill -9``): its users' messages go to offline storage, nothing acknowledged is
lost, and the node comes back and rejoins."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from roost.testing.processes import NodeProcess, process_cluster
from roost.testing.rawclient import RawClient
from roost.testing.smclient import SMClient
from roost.xmpp.element import Element

pytestmark = pytest.mark.slow


async def _users(node: NodeProcess, *names: str) -> None:
    for name in names:
        await node.eval(f"await server.auth.create_user('{name}@localhost', 'secret')")


async def _online(node: NodeProcess, user: str) -> RawClient:
    client = await RawClient.logged_in(node.host, node.port, user, cert=node.cert, resource="r")
    await client.send("<presence/>")
    await client.expect("presence")
    return client


async def test_three_nodes_chat_and_survive_a_killed_node(tmp_path: Path) -> None:
    async with process_cluster(tmp_path, nodes=3) as nodes:
        first, second, third = nodes
        await _users(first, "alice", "bob", "carol")
        alice = await _online(first, "alice")
        bob = await _online(second, "bob")
        for node in nodes:
            await node.wait_for("len(server.sessions.routes('bob@localhost')) == 1")
        await alice.send("<message to='bob@localhost' type='chat'><body>across</body></message>")
        assert (await bob.expect("message")).find_text("body") == "across"

        # Carol on the third node, with stream management: messages to her are confirmed to
        # the forwarding node only once her client acknowledges them.
        received: list[str] = []
        got = asyncio.Event()

        def on_stanza(stanza: Element) -> None:
            if stanza.name == "message":
                received.append(stanza.attrs.get("id", ""))
                got.set()

        carol = SMClient(third.host, third.port, "carol", cert=third.cert, resource="r")
        carol.on_stanza = on_stanza
        await carol.start()
        await carol.send("<presence/>")
        for node in nodes:
            await node.wait_for("len(server.sessions.routes('carol@localhost')) == 1")
        sender = SMClient(first.host, first.port, "alice", cert=first.cert, resource="s")
        await sender.start()
        sent = [f"m{i}" for i in range(200)]
        for i, ident in enumerate(sent):
            await sender.send(
                f"<message to='carol@localhost' type='chat' id='{ident}'><body>{i}</body></message>"
            )
            if i == 100:
                while len(received) < 50:
                    got.clear()
                    await asyncio.wait_for(got.wait(), 15)
                await third.kill()  # under traffic
        await sender.all_acknowledged()  # the first node took every message

        # The dead node's sessions leave the others' view; the rest is delivered offline.
        for node in (first, second):
            await node.wait_for("not server.sessions.routes('carol@localhost')")
        await first.eval("await server.settle()")
        again = await RawClient.logged_in(second.host, second.port, "carol", cert=second.cert)
        await again.send("<presence/>")
        offline: list[str] = []
        missing = set(sent) - set(received)
        while missing - set(offline):
            message = await again.expect("message")
            offline.append(message.attrs.get("id", ""))
        assert set(received) | set(offline) >= set(sent)
        # Per-sender order holds within each part.
        assert received == sorted(received, key=lambda x: int(x[1:]))
        print(
            f"\nkill -9 test: {len(received)} delivered live, {len(offline)} from offline storage"
        )

        # The node restarts and rejoins.
        await third.start()
        await first.wait_for("'node3' in server.cluster.mesh.peers()")
        await third.wait_for("len(server.cluster.mesh.peers()) == 2")


async def test_roost_up_nodes_shares_the_client_port_and_restarts_a_dead_node(
    tmp_path: Path,
) -> None:
    import re
    import signal
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roost", "up", "--nodes", "2", "--data-dir", str(tmp_path),
        "--c2s-port", "0", "--c2s-tls-port", "-1", "--websocket-port", "-1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    node1 = NodeProcess("node1", tmp_path, 0, [], {})
    node2 = NodeProcess("node2", tmp_path, 0, [], {})
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        match = re.search(r"2 nodes on c2s 127\.0\.0\.1:(\d+).*node1 \(pid (\d+)\), node2", line)
        assert match, line
        port, pid = int(match.group(1)), int(match.group(2))
        await node1.wait_for("len(server.cluster.mesh.peers()) == 1")
        await node1.eval("await server.auth.create_user('dave@localhost', 'secret')")
        # Many logins on the one port: the kernel spreads them over both nodes.
        cert = tmp_path / "tls" / "cert.pem"
        clients = [
            await RawClient.logged_in("127.0.0.1", port, "dave", cert=cert, resource=f"r{i}")
            for i in range(24)
        ]
        here = await node1.eval("len(server.sessions)")
        there = await node2.eval("len(server.sessions)")
        assert here + there == len(clients)
        assert here > 0
        assert there > 0  # all 24 on one node: a chance of 1 in 8 million
        os.kill(pid, signal.SIGKILL)
        while True:
            text = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
            if "node1 ready (pid" in text and f"pid {pid})" not in text:
                break
        await node2.wait_for("len(server.cluster.mesh.peers()) == 1")
        await node2.wait_for("'node1' in server.cluster.mesh.peers()")
    finally:
        for node in (node1, node2):
            await node._drop_control()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
