"""Messages: 1:1 chat both ways, priorities, and offline storage (RFC 6121 §5, §8; XEP-0160)."""

from __future__ import annotations

import asyncio

import pytest

from roost.testing import RunningServer
from tests.e2e.conftest import TIMEOUT, Connect


async def test_chat_both_ways(roost_server: RunningServer, connect: Connect) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a")
    bob = await connect(f"{bob_jid}/b")
    alice.send_presence()
    bob.send_presence()
    alice.send_message(mto=bob_jid, mbody="hi Bob", mtype="chat")
    got = await bob.next_message()
    assert (got["body"], got["from"].full, got["type"]) == ("hi Bob", f"{alice_jid}/a", "chat")
    bob.send_message(mto=got["from"], mbody="hi Alice", mtype="chat")
    back = await alice.next_message()
    assert (back["body"], back["from"].full) == ("hi Alice", f"{bob_jid}/b")


async def test_message_to_bare_jid_goes_to_the_highest_priority_resource(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a")
    low = await connect(f"{bob_jid}/low")
    high = await connect(f"{bob_jid}/high")
    low.send_presence(ppriority=1)
    high.send_presence(ppriority=10)
    await high.next_presence(bob_jid)  # both presences known to the server by now
    await high.next_presence(bob_jid)
    alice.send_message(mto=bob_jid, mbody="for the top one", mtype="chat")
    got = await high.next_message()
    assert got["body"] == "for the top one"
    # And a full JID reaches exactly that resource, whatever its priority.
    alice.send_message(mto=f"{bob_jid}/low", mbody="for low", mtype="chat")
    got = await low.next_message()
    assert got["body"] == "for low"
    assert high.messages.empty()


async def test_offline_messages_are_delivered_in_order_with_delay_on_next_login(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a")
    for i in range(20):
        alice.send_message(mto=bob_jid, mbody=f"offline {i}", mtype="chat")
    # A ping round trip after the sends: the server handles a client's stanzas in order, so
    # once the pong is back every message above has been stored.
    await alice.plugin["xep_0199"].ping(roost_server.domain)
    assert await roost_server.server.storage.count_offline(bob_jid) == 20
    bob = await connect(f"{bob_jid}/b", plugins=("xep_0199", "xep_0203"))
    bob.send_presence()
    bodies = []
    for _ in range(20):
        message = await bob.next_message()
        bodies.append(message["body"])
        assert message["delay"]["stamp"] is not None
        assert message["delay"]["from"] == roost_server.domain
    assert bodies == [f"offline {i}" for i in range(20)]
    await bob.plugin["xep_0199"].ping(roost_server.domain)
    assert await roost_server.server.storage.count_offline(bob_jid) == 0


async def test_message_to_unknown_local_user_bounces_service_unavailable(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    alice = await connect(f"{alice_jid}/a")
    alice.send_message(mto="ghost@localhost", mbody="anyone?", mtype="chat")
    error = await alice.next_message()
    assert error["type"] == "error"
    assert error["error"]["condition"] == "service-unavailable"
    assert error["from"].bare == "ghost@localhost"


async def test_message_to_another_domain_bounces_remote_server_not_found(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    alice = await connect(f"{alice_jid}/a")
    alice.send_message(mto="bob@elsewhere.example", mbody="hello?", mtype="chat")
    error = await asyncio.wait_for(alice.messages.get(), TIMEOUT)
    assert error["type"] == "error"
    assert error["error"]["condition"] == "remote-server-not-found"


@pytest.mark.roost_config(offline_limit=3)
async def test_a_full_offline_queue_bounces_with_resource_constraint(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a")
    for i in range(5):
        alice.send_message(mto=bob_jid, mbody=f"n{i}", mtype="chat")
    errors = []
    for _ in range(2):
        error = await alice.next_message()
        assert error["type"] == "error"
        errors.append((error["body"], error["error"]["condition"], error["error"]["type"]))
    assert errors == [("n3", "resource-constraint", "wait"), ("n4", "resource-constraint", "wait")]
    assert await roost_server.server.storage.count_offline(bob_jid) == 3
