"""Rosters and presence between two users, with slixmpp on both ends (RFC 6121 §2-§4)."""

from __future__ import annotations

import asyncio

from roost.testing import RunningServer
from tests.e2e.conftest import TIMEOUT, Client, Connect


async def _subscribe_both_ways(alice: Client, bob: Client) -> None:
    """The full handshake: each asks, each approves (RFC 6121 §3.1)."""
    bob.auto_authorize = True
    bob.auto_subscribe = True
    alice.auto_authorize = True
    alice.send_presence_subscription(pto=bob.boundjid.bare)
    # bob approves automatically and asks back; alice approves that too.
    await alice.roster_until(
        lambda: alice.client_roster[bob.boundjid.bare]["subscription"] == "both"
    )
    await bob.roster_until(lambda: bob.client_roster[alice.boundjid.bare]["subscription"] == "both")


async def test_roster_set_is_pushed_to_every_resource_and_returned_by_get(
    roost_server: RunningServer, connect: Connect
) -> None:
    jid = await roost_server.create_user("alice")
    phone = await connect(f"{jid}/phone")
    laptop = await connect(f"{jid}/laptop")
    await phone.get_roster()
    await laptop.get_roster()
    pushed = asyncio.Event()
    laptop.add_event_handler("roster_update", lambda _: pushed.set())
    await phone.update_roster("carol@localhost", name="Carol", groups=["Friends", "Work"])
    await asyncio.wait_for(pushed.wait(), TIMEOUT)
    item = laptop.client_roster["carol@localhost"]
    assert item["name"] == "Carol"
    assert sorted(item["groups"]) == ["Friends", "Work"]
    assert item["subscription"] == "none"
    # A plain get (no cached version) returns the item as stored.
    iq = phone.Iq()
    iq["type"] = "get"
    iq.enable("roster")
    result = await iq.send()
    assert set(result["roster"]["items"]) == {"carol@localhost"}


async def test_roster_remove_pushes_removal(roost_server: RunningServer, connect: Connect) -> None:
    jid = await roost_server.create_user("alice")
    phone = await connect(f"{jid}/phone")
    await phone.get_roster()
    await phone.update_roster("carol@localhost", name="Carol")
    removed = asyncio.Event()
    phone.add_event_handler("roster_update", lambda _: removed.set())
    await phone.del_roster_item("carol@localhost")
    await asyncio.wait_for(removed.wait(), TIMEOUT)
    assert "carol@localhost" not in phone.client_roster
    iq = phone.Iq()
    iq["type"] = "get"
    iq.enable("roster")
    result = await iq.send()
    assert "carol@localhost" not in result["roster"]["items"]


async def test_roster_versioning_returns_empty_result_when_unchanged(
    roost_server: RunningServer, connect: Connect
) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(jid)
    await client.update_roster("carol@localhost", name="Carol")
    first = await client.get_roster()
    version = first["roster"]["ver"]
    assert version not in ("", "0")
    iq = client.Iq()
    iq["type"] = "get"
    iq["roster"]["ver"] = version
    again = await iq.send()
    assert again["type"] == "result"
    assert len(again.xml) == 0  # no <query/>: the client's copy is current (RFC 6121 §2.6.3)


async def test_subscription_handshake_then_presence_is_seen_both_ways(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a")
    bob = await connect(f"{bob_jid}/b")
    await alice.get_roster()
    await bob.get_roster()
    alice.send_presence()
    bob.send_presence()
    await _subscribe_both_ways(alice, bob)
    alice.send_presence(pstatus="writing tests")
    presence = await bob.next_presence(alice_jid)
    while presence["status"] != "writing tests":
        presence = await bob.next_presence(alice_jid)
    assert presence["from"].full == f"{alice_jid}/a"


async def test_unavailable_presence_is_broadcast_when_a_contact_disconnects(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a")
    bob = await connect(f"{bob_jid}/b")
    await alice.get_roster()
    await bob.get_roster()
    alice.send_presence()
    bob.send_presence()
    await _subscribe_both_ways(alice, bob)
    alice.disconnect()
    while True:
        presence = await bob.next_presence(alice_jid)
        if presence["type"] == "unavailable":
            break
    assert presence["from"].full == f"{alice_jid}/a"


async def test_probe_on_login_delivers_contacts_current_presence(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a")
    bob = await connect(f"{bob_jid}/b")
    await alice.get_roster()
    await bob.get_roster()
    alice.send_presence()
    bob.send_presence()
    await _subscribe_both_ways(alice, bob)
    bob.send_presence(pstatus="here before you")
    bob2 = await connect(f"{bob_jid}/second")
    del bob2
    alice.disconnect()
    await asyncio.wait_for(alice.ended.wait(), TIMEOUT)
    # Alice logs in again: her initial presence probes Bob, who is online.
    again = await connect(f"{alice_jid}/a2")
    await again.get_roster()
    again.send_presence()
    presence = await again.next_presence(bob_jid)
    while presence["status"] != "here before you":
        presence = await again.next_presence(bob_jid)
    assert presence["from"].full == f"{bob_jid}/b"


async def test_subscription_request_waits_for_an_offline_user(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a")
    await alice.get_roster()
    alice.send_presence(pto=bob_jid, ptype="subscribe", pstatus="it's Alice")
    await alice.roster_until(lambda: bool(alice.client_roster[bob_jid]["pending_out"]))
    bob = await connect(f"{bob_jid}/b")
    bob.auto_authorize = None  # leave the request unanswered
    bob.auto_subscribe = False
    await bob.get_roster()
    bob.send_presence()
    request = await asyncio.wait_for(bob.subscriptions.get(), TIMEOUT)
    assert request["type"] == "subscribe"
    assert request["from"].bare == alice_jid
    assert request["status"] == "it's Alice"
    # The pending request is not a roster entry of Bob's (RFC 6121 §3.1.3).
    iq = bob.Iq()
    iq["type"] = "get"
    iq.enable("roster")
    result = await iq.send()
    assert alice_jid not in result["roster"]["items"]


async def test_directed_presence_reaches_only_its_target(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a")
    bob = await connect(f"{bob_jid}/b")
    bob.send_presence()
    alice.send_presence(pto=f"{bob_jid}/b", pstatus="just for you")
    presence = await bob.next_presence(alice_jid)
    assert presence["status"] == "just for you"
    alice.disconnect()
    presence = await bob.next_presence(alice_jid)
    assert presence["type"] == "unavailable"
