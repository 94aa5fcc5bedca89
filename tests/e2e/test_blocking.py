"""Blocking Command (XEP-0191) with slixmpp, and the exact errors and pushes on the wire."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from roost.config import ServerConfig
from roost.modules.blocking import BLOCKING, BLOCKING_ERRORS
from roost.testing import RunningServer
from roost.testing.rawclient import RawClient
from roost.xmpp import ns
from roost.xmpp.element import Element
from tests.e2e.conftest import TIMEOUT, Client, Connect

MODULES = [*ServerConfig().modules, "blocking"]
PLUGINS = ("xep_0030", "xep_0199", "xep_0191")

pytestmark = pytest.mark.roost_config(modules=MODULES)


async def _client(connect: Connect, jid: str) -> Client:
    client = await connect(jid, plugins=PLUGINS)
    client.send_presence()
    return client


def _events(client: Client, *names: str) -> asyncio.Queue[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for name in names:
        client.add_event_handler(name, queue.put_nowait)
    return queue


def _is_blocked_error(message: Any) -> bool:
    error = message.xml.find("{jabber:client}error")
    return (
        message["type"] == "error"
        and message["error"]["condition"] == "not-acceptable"
        and error is not None
        and error.get("type") == "cancel"
        and error.find(f"{{{BLOCKING_ERRORS}}}blocked") is not None
    )


def _chats(client: Client) -> list[str]:
    """Bodies of the messages (not errors echoing a body) that ``client`` has received."""
    bodies = []
    while not client.messages.empty():
        message = client.messages.get_nowait()
        if message["type"] != "error":
            bodies.append(message["body"])
    return bodies


async def _next_chat(client: Client) -> Any:
    while True:
        message = await client.next_message()
        if message["type"] != "error":
            return message


async def _subscribe_both_ways(alice: Client, bob: Client) -> None:
    await alice.get_roster()
    await bob.get_roster()
    bob.auto_authorize = True
    bob.auto_subscribe = True
    alice.auto_authorize = True
    alice.send_presence_subscription(pto=bob.boundjid.bare)
    await alice.roster_until(
        lambda: alice.client_roster[bob.boundjid.bare]["subscription"] == "both"
    )
    await bob.roster_until(lambda: bob.client_roster[alice.boundjid.bare]["subscription"] == "both")


async def test_the_blocklist_starts_empty_and_lists_what_was_blocked(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice = await roost_server.create_user("alice")
    client = await connect(alice, plugins=PLUGINS)
    blocking = client.plugin["xep_0191"]
    assert await blocking.get_blocked_jids() == set()
    await blocking.block(["iago@localhost", "Spam.Example", "romeo@localhost/orchard"])
    listed = await blocking.get_blocked_jids()
    assert {str(jid) for jid in listed} == {
        "iago@localhost",
        "spam.example",  # normalised
        "romeo@localhost/orchard",
    }
    assert await roost_server.server.storage.get_blocklist(alice) == sorted(
        ["iago@localhost", "romeo@localhost/orchard", "spam.example"]
    )


async def test_a_blocked_contact_cannot_reach_the_user_and_the_user_cannot_reach_it(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await _client(connect, f"{alice_jid}/a")
    bob = await _client(connect, f"{bob_jid}/b")
    bob_errors = _events(bob, "message_error")
    alice_errors = _events(alice, "message_error")
    await alice.plugin["xep_0191"].block(bob_jid)

    # Bob's message does not arrive; Bob learns it was not delivered (§3.3).
    bob.send_message(mto=alice_jid, mbody="hello?", mtype="chat")
    error = await asyncio.wait_for(bob_errors.get(), TIMEOUT)
    assert error["error"]["condition"] == "service-unavailable"
    assert error["from"].bare == alice_jid
    # Bob's IQs to Alice's account are refused the same way.
    with pytest.raises(IqError) as refused:
        await bob.plugin["xep_0030"].get_info(jid=alice_jid)
    assert refused.value.iq["error"]["condition"] == "service-unavailable"

    # Alice's own message to Bob comes back as blocked, and Bob never sees it.
    alice.send_message(mto=f"{bob_jid}/b", mbody="you are blocked", mtype="chat")
    error = await asyncio.wait_for(alice_errors.get(), TIMEOUT)
    assert _is_blocked_error(error)
    assert error["from"].full == f"{bob_jid}/b"
    assert error["body"] == "you are blocked"
    assert _chats(alice) == []
    assert _chats(bob) == []


async def test_unblocking_restores_messages_both_ways(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await _client(connect, f"{alice_jid}/a")
    bob = await _client(connect, f"{bob_jid}/b")
    bob_errors = _events(bob, "message_error")
    await alice.plugin["xep_0191"].block(bob_jid)
    bob.send_message(mto=alice_jid, mbody="blocked", mtype="chat")
    await asyncio.wait_for(bob_errors.get(), TIMEOUT)

    await alice.plugin["xep_0191"].unblock(bob_jid)
    bob.send_message(mto=alice_jid, mbody="back again", mtype="chat")
    assert (await alice.next_message())["body"] == "back again"
    alice.send_message(mto=f"{bob_jid}/b", mbody="welcome back", mtype="chat")
    assert (await _next_chat(bob))["body"] == "welcome back"


async def test_blocking_one_resource_leaves_the_others_alone(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await _client(connect, f"{alice_jid}/a")
    bot = await _client(connect, f"{bob_jid}/bot")
    bob = await _client(connect, f"{bob_jid}/b")
    bot_errors = _events(bot, "message_error")
    await alice.plugin["xep_0191"].block(f"{bob_jid}/bot")
    bot.send_message(mto=alice_jid, mbody="spam", mtype="chat")
    assert (await asyncio.wait_for(bot_errors.get(), TIMEOUT))["type"] == "error"
    bob.send_message(mto=alice_jid, mbody="from the person", mtype="chat")
    assert (await alice.next_message())["body"] == "from the person"


async def test_a_block_is_pushed_to_every_resource_that_asked_for_the_list(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice = await roost_server.create_user("alice")
    phone = await connect(f"{alice}/phone", plugins=PLUGINS)
    laptop = await connect(f"{alice}/laptop", plugins=PLUGINS)
    pushes = _events(laptop, "blocked", "unblocked")
    await laptop.plugin["xep_0191"].get_blocked()  # asks for the list: gets pushes from now on

    await phone.plugin["xep_0191"].block(["iago@localhost", "spam.example"])
    push = await asyncio.wait_for(pushes.get(), TIMEOUT)
    assert push["type"] == "set"
    assert {item["jid"] for item in push["block"]["items"]} == {"iago@localhost", "spam.example"}
    await phone.plugin["xep_0191"].unblock("iago@localhost")
    push = await asyncio.wait_for(pushes.get(), TIMEOUT)
    assert [item["jid"] for item in push["unblock"]["items"]] == ["iago@localhost"]

    # Unblocking everyone: an empty <unblock/>, pushed as such.
    iq = phone.make_iq_set()
    iq.enable("unblock")
    await iq.send()
    push = await asyncio.wait_for(pushes.get(), TIMEOUT)
    assert push.xml.find(f"{{{BLOCKING}}}unblock") is not None
    assert list(push["unblock"]["items"]) == []
    assert await phone.plugin["xep_0191"].get_blocked_jids() == set()


async def test_blocking_a_subscribed_contact_makes_the_user_appear_offline_to_it(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await _client(connect, f"{alice_jid}/a")
    bob = await _client(connect, f"{bob_jid}/b")
    await _subscribe_both_ways(alice, bob)
    alice.send_presence(pstatus="before")
    while (await bob.next_presence(alice_jid))["status"] != "before":
        pass

    await alice.plugin["xep_0191"].block(bob_jid)
    gone = await bob.next_presence(alice_jid)
    assert (gone["type"], gone["from"].full) == ("unavailable", f"{alice_jid}/a")

    # While blocked, presence goes neither way. A ping round trip of the sender, then of the
    # receiver, puts anything that was delivered into the receiver's queue.
    # (No <show/>: the test client reports only plain available and unavailable presence.)
    alice.send_presence(pstatus="while blocked", ppriority=5)
    bob.send_presence(pstatus="while blocked")
    for client in (alice, bob, alice, bob):
        await client.plugin["xep_0199"].ping(roost_server.domain)
    assert _statuses(bob, alice_jid) == []
    assert "while blocked" not in _statuses(alice, bob_jid)

    # Unblocked: Bob gets Alice's current presence, Alice learns Bob's (by a probe).
    await alice.plugin["xep_0191"].unblock(bob_jid)
    back = await bob.next_presence(alice_jid)
    assert (back["status"], back["priority"]) == ("while blocked", 5)
    while (await alice.next_presence(bob_jid))["status"] != "while blocked":
        pass


def _statuses(client: Client, sender: str) -> list[str]:
    """The statuses of the presences from ``sender`` that ``client`` has received so far."""
    found = []
    while not client.presences.empty():
        presence = client.presences.get_nowait()
        if presence["from"].bare == sender:
            found.append(presence["status"])
    return found


async def test_a_block_holds_while_the_user_is_offline_and_nothing_is_stored(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/a", plugins=PLUGINS)
    await alice.plugin["xep_0191"].block(bob_jid)
    alice.disconnect()
    await asyncio.wait_for(alice.ended.wait(), TIMEOUT)

    bob = await _client(connect, f"{bob_jid}/b")
    bob_errors = _events(bob, "message_error")
    bob.send_message(mto=alice_jid, mbody="while you were out", mtype="chat")
    error = await asyncio.wait_for(bob_errors.get(), TIMEOUT)
    assert error["error"]["condition"] == "service-unavailable"
    assert await roost_server.server.storage.count_offline(alice_jid) == 0


async def test_disco_advertises_blocking(roost_server: RunningServer, connect: Connect) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(jid)
    info = await client.plugin["xep_0030"].get_info(jid=roost_server.domain)
    assert BLOCKING in info["disco_info"]["features"]


@pytest.mark.roost_config(modules=[*MODULES, "carbons"])
async def test_a_message_refused_by_a_block_is_not_carbon_copied(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    phone = await connect(f"{alice_jid}/phone", plugins=(*PLUGINS, "xep_0280", "xep_0297"))
    laptop = await connect(f"{alice_jid}/laptop", plugins=(*PLUGINS, "xep_0280", "xep_0297"))
    bob = await _client(connect, f"{bob_jid}/b")
    copies = _events(laptop, "carbon_sent")
    await laptop.plugin["xep_0280"].enable()
    errors = _events(phone, "message_error")
    await phone.plugin["xep_0191"].block(bob_jid)
    phone.send_message(mto=f"{bob_jid}/b", mbody="refused", mtype="chat")
    assert _is_blocked_error(await asyncio.wait_for(errors.get(), TIMEOUT))
    phone.send_message(mto=f"{alice_jid}/laptop", mbody="note to self", mtype="chat")
    assert (await laptop.next_message())["body"] == "note to self"
    assert copies.empty()
    assert _chats(bob) == []


# -- the wire ------------------------------------------------------------------------------


async def _raw(server: RunningServer, user: str, resource: str) -> RawClient:
    return await RawClient.logged_in(
        server.host, server.port, user, cert=server.cert, resource=resource
    )


async def _error_condition(client: RawClient, request: str) -> str:
    await client.send(request)
    reply = await client.expect("iq")
    assert reply.attrs["type"] == "error"
    error = reply.find("error")
    assert error is not None
    return next(c.name for c in error.elements() if c.xmlns == ns.STANZAS)


@pytest.mark.parametrize(
    ("request_xml", "condition"),
    [
        (f"<iq type='set' id='x'><block xmlns='{BLOCKING}'/></iq>", "bad-request"),
        (
            f"<iq type='set' id='x'><block xmlns='{BLOCKING}'><item jid='a@@b'/></block></iq>",
            "jid-malformed",
        ),
        (
            f"<iq type='set' id='x'><block xmlns='{BLOCKING}'><item jid='ok@localhost'/>"
            "<item/></block></iq>",
            "jid-malformed",
        ),
        (
            f"<iq type='set' id='x'><unblock xmlns='{BLOCKING}'><item jid='x@/'/></unblock></iq>",
            "jid-malformed",
        ),
        (f"<iq type='get' id='x'><block xmlns='{BLOCKING}'/></iq>", "bad-request"),
        (f"<iq type='set' id='x'><blocklist xmlns='{BLOCKING}'/></iq>", "bad-request"),
        (
            f"<iq type='get' id='x' to='bob@localhost'><blocklist xmlns='{BLOCKING}'/></iq>",
            "forbidden",
        ),
    ],
)
async def test_bad_requests_are_refused_and_change_nothing(
    roost_server: RunningServer, request_xml: str, condition: str
) -> None:
    alice = await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    client = await _raw(roost_server, alice, "a")
    assert await _error_condition(client, request_xml) == condition
    assert await roost_server.server.storage.get_blocklist(alice) == []
    await client.close()


async def test_pushes_and_the_blocked_error_on_the_wire(roost_server: RunningServer) -> None:
    alice = await roost_server.create_user("alice")
    laptop = await _raw(roost_server, alice, "laptop")
    tablet = await _raw(roost_server, alice, "tablet")  # never asks for the list
    await laptop.send(f"<iq type='get' id='l1'><blocklist xmlns='{BLOCKING}'/></iq>")
    listed = await laptop.expect("iq")
    assert listed.find("blocklist", BLOCKING) == Element("blocklist", BLOCKING)

    await laptop.send(
        f"<iq type='set' id='b1'><block xmlns='{BLOCKING}'><item jid='romeo@localhost'/>"
        "</block></iq>"
    )
    # The push to the requester comes before the result, as the list changed first.
    push = await laptop.expect("iq")
    assert (push.attrs["type"], push.attrs["to"], push.attrs["from"]) == (
        "set",
        f"{alice}/laptop",
        alice,
    )
    block = Element("block", BLOCKING)
    block.add("item", attrs={"jid": "romeo@localhost"})
    assert push.find("block", BLOCKING) == block
    await laptop.send(f"<iq type='result' id='{push.attrs['id']}'/>")
    result = await laptop.expect("iq")
    assert (result.attrs["type"], result.attrs["id"]) == ("result", "b1")

    await laptop.send(
        "<message to='romeo@localhost/orchard' id='m1' type='chat'><body>hi</body></message>"
    )
    error = await laptop.expect("message")
    assert error.attrs == {
        "to": f"{alice}/laptop",
        "from": "romeo@localhost/orchard",
        "id": "m1",
        "type": "error",
    }
    expected = Element("error", ns.CLIENT, {"type": "cancel"})
    expected.add("not-acceptable", ns.STANZAS)
    expected.add("blocked", BLOCKING_ERRORS)
    assert error.find("error") == expected
    assert error.find_text("body") == "hi"

    # The tablet never asked for the list: the first thing it gets is a message, not a push.
    await laptop.send(f"<message to='{alice}/tablet'><body>after the block</body></message>")
    first = await tablet.next_element()
    assert (first.name, first.find_text("body")) == ("message", "after the block")
    await laptop.close()
    await tablet.close()
