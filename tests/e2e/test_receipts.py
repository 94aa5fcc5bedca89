"""Receipts (XEP-0184), chat markers (XEP-0333) and chat states (XEP-0085) between two slixmpp
clients: the server routes them as they are, and keeps only what is worth keeping offline.

No module is involved: these are ordinary messages to the server. What the server decides is
what it *stores*: a chat state for an offline user is dropped (it means nothing later), while a
receipt or a marker is stored like any message, since the sender wants it delivered. The
archive (XEP-0313) makes the same distinction for chat states; its own tests cover that.
"""

from __future__ import annotations

import asyncio
from typing import Any

from roost.testing import RunningServer
from tests.e2e.conftest import TIMEOUT, Client, Connect

PLUGINS = ("xep_0030", "xep_0199", "xep_0085", "xep_0184", "xep_0333")


async def _pair(connect: Connect, server: RunningServer) -> tuple[Client, Client, str, str]:
    alice_jid = await server.create_user("alice")
    bob_jid = await server.create_user("bob")
    alice = await connect(f"{alice_jid}/a", plugins=PLUGINS)
    bob = await connect(f"{bob_jid}/b", plugins=PLUGINS)
    alice.send_presence()
    bob.send_presence()
    return alice, bob, f"{alice_jid}/a", f"{bob_jid}/b"


def _events(client: Client, name: str) -> asyncio.Queue[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    client.add_event_handler(name, queue.put_nowait)
    return queue


async def test_a_requested_receipt_comes_back_to_the_sender(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice, bob, _, bob_full = await _pair(connect, roost_server)
    receipts = _events(alice, "receipt_received")
    message = alice.make_message(mto=bob_full, mbody="did you get this?", mtype="chat")
    message["request_receipt"] = True
    message.send()
    got = await bob.next_message()  # bob's client acknowledges it by itself
    assert got["request_receipt"]
    receipt = await asyncio.wait_for(receipts.get(), TIMEOUT)
    assert receipt["receipt"] == message["id"]
    assert receipt["from"].full == bob_full


async def test_a_displayed_marker_reaches_the_sender(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice, bob, alice_full, bob_full = await _pair(connect, roost_server)
    markers = _events(alice, "marker_displayed")
    message = alice.make_message(mto=bob_full, mbody="read me", mtype="chat")
    message.enable("markable")
    message.send()
    got = await bob.next_message()
    assert got.xml.find("{urn:xmpp:chat-markers:0}markable") is not None
    bob.plugin["xep_0333"].send_marker(alice_full, got["id"], "displayed", mtype="chat")
    marker = await asyncio.wait_for(markers.get(), TIMEOUT)
    assert (marker["displayed"]["id"], marker["from"].full) == (message["id"], bob_full)


async def test_chat_states_reach_an_online_recipient(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice, bob, _, bob_full = await _pair(connect, roost_server)
    states = _events(bob, "chatstate")
    for state in ("composing", "paused"):
        message = alice.make_message(mto=bob_full, mtype="chat")
        message["chat_state"] = state
        message.send()
    got = [await asyncio.wait_for(states.get(), TIMEOUT) for _ in range(2)]
    assert [m["chat_state"] for m in got] == ["composing", "paused"]
    assert not got[0]["body"]


async def test_chat_states_are_not_stored_for_an_offline_user_but_receipts_are(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a", plugins=PLUGINS)
    composing = alice.make_message(mto=bob_jid, mtype="chat")
    composing["chat_state"] = "composing"
    composing.send()
    # A ping round trip: the server handles the client's stanzas in order.
    await alice.plugin["xep_0199"].ping(roost_server.domain)
    assert await roost_server.server.storage.count_offline(bob_jid) == 0

    receipt = alice.make_message(mto=bob_jid)
    receipt["receipt"] = "an-earlier-message"
    receipt.send()
    await alice.plugin["xep_0199"].ping(roost_server.domain)
    assert await roost_server.server.storage.count_offline(bob_jid) == 1

    bob = await connect(f"{bob_jid}/b", plugins=PLUGINS)
    receipts = _events(bob, "receipt_received")
    bob.send_presence()
    stored = await asyncio.wait_for(receipts.get(), TIMEOUT)
    assert stored["receipt"] == "an-earlier-message"
    assert stored["from"].full == f"{alice_jid}/a"
