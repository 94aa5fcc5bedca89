"""Offline storage when the store is on one node and the recipient's new session on another.

The node of the new session reads the user's queue at once; a store still under way on the
other node cannot be waited for there. Each test holds that store until the read is done, and
checks that the message still reaches the session without a new login: the storing node tells
the session's node to read again (roost.modules.offline, ``cluster.offline_stored``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from roost.testing.rawclient import RawClient
from roost.testing.server import RunningCluster, RunningServer, running_cluster
from roost.xmpp.element import Element
from roost.xmpp.jid import parse_jid

BOB = "bob@localhost"


class HeldStores:
    """``node``'s offline stores made to wait until :attr:`go_on` is set."""

    def __init__(self, node: RunningServer) -> None:
        self.waiting = asyncio.Event()  # a store waits
        self.go_on = asyncio.Event()
        self.stored = asyncio.Event()  # a store is done (and what follows it in that task)
        storage = node.server.storage
        store = storage.store_offline

        async def held(*args: Any, **kwargs: Any) -> int:
            self.waiting.set()
            await self.go_on.wait()
            stored = await store(*args, **kwargs)
            self.stored.set()  # its waiter runs once the storing task has gone on
            return stored

        storage.store_offline = held  # type: ignore[method-assign]


class NotedReads:
    """How many messages each of ``node``'s reads of an offline queue found, in order."""

    def __init__(self, node: RunningServer) -> None:
        self.found: list[int] = []
        self.read = asyncio.Event()  # a read is done (and what follows it in that task)
        storage = node.server.storage
        fetch: Callable[..., Awaitable[list[Any]]] = storage.fetch_offline

        async def noted(*args: Any, **kwargs: Any) -> list[Any]:
            messages = await fetch(*args, **kwargs)
            self.found.append(len(messages))
            self.read.set()
            return messages

        storage.fetch_offline = noted  # type: ignore[method-assign]


def _knows_bob(node: RunningServer) -> bool:
    route = node.server.sessions.get(parse_jid(f"{BOB}/r"))
    return route is not None and route.available


async def _send_to_bob(cluster: RunningCluster) -> tuple[RawClient, HeldStores]:
    """Alice, on node 1, sends Bob (offline) a message whose store is held."""
    await cluster[0].create_user("alice")
    await cluster[0].create_user("bob")
    held = HeldStores(cluster[0])
    alice = await RawClient.logged_in(
        cluster[0].host, cluster[0].port, "alice", cert=cluster[0].cert
    )
    await alice.send(f"<message to='{BOB}' type='chat'><body>late</body></message>")
    await held.waiting.wait()
    return alice, held


async def _bob_online_on_node_2(cluster: RunningCluster, reads: NotedReads) -> RawClient:
    """Bob logs in on node 2, whose read of his queue finds it empty (the store is held)."""
    bob = await RawClient.logged_in(
        cluster[1].host, cluster[1].port, "bob", cert=cluster[1].cert, resource="r"
    )
    await bob.send("<presence/>")
    await bob.expect("presence")
    await reads.read.wait()
    assert reads.found == [0]
    return bob


async def _only_once(bob: RawClient) -> None:
    """Bob's message came once: what he gets next, up to a ping's answer, is no message."""
    await bob.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        event = await bob.next_event()
        assert not (isinstance(event, Element) and event.name == "message")
        if isinstance(event, Element) and event.name == "iq":
            return


async def test_a_store_that_ends_after_the_read_is_read_again(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, nodes=2) as cluster:
        reads = NotedReads(cluster[1])
        _alice, held = await _send_to_bob(cluster)
        bob = await _bob_online_on_node_2(cluster, reads)
        await cluster.until(lambda: _knows_bob(cluster[0]))
        held.go_on.set()  # the store ends where Bob's session is known
        message = await bob.expect("message")
        assert message.find_text("body") == "late"
        await _only_once(bob)
        assert reads.found == [0, 1]


async def test_a_session_known_after_a_recent_store_is_told_to_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_cluster(tmp_path, nodes=2) as cluster:
        reads = NotedReads(cluster[1])
        # Node 1 learns of Bob's session only when the test says so.
        registry = cluster[0].server.sessions
        joined = registry._joined  # type: ignore[union-attr]
        deferred: list[tuple[str, Any]] = []

        def defer(group: str, members: Any) -> None:
            if group == BOB:
                deferred.append((group, members))
            else:
                joined(group, members)

        monkeypatch.setattr(registry, "_joined", defer)
        _alice, held = await _send_to_bob(cluster)
        bob = await _bob_online_on_node_2(cluster, reads)
        held.go_on.set()  # the store ends where Bob is not known yet
        await held.stored.wait()
        assert not _knows_bob(cluster[0])
        assert await cluster[0].server.storage.count_offline(BOB) == 1
        monkeypatch.setattr(registry, "_joined", joined)
        for group, members in deferred:
            joined(group, members)
        message = await bob.expect("message")
        assert message.find_text("body") == "late"
        await _only_once(bob)
        assert reads.found == [0, 1]
