"""Message Carbons (XEP-0280) with slixmpp devices, and the exact copies on the wire."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from roost.config import ServerConfig
from roost.modules.carbons import CARBONS, FORWARD, CarbonsModule
from roost.testing import RunningServer
from roost.testing.rawclient import RawClient
from roost.xmpp import ns
from tests.e2e.conftest import TIMEOUT, Client, Connect

MODULES = [*ServerConfig().modules, "carbons"]
PLUGINS = ("xep_0030", "xep_0199", "xep_0280", "xep_0297")

pytestmark = pytest.mark.roost_config(modules=MODULES)


class Copies:
    """The carbon copies one slixmpp client receives, in order, as (kind, original)."""

    def __init__(self, client: Client) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        client.add_event_handler(
            "carbon_received", lambda m: self.queue.put_nowait(("received", m))
        )
        client.add_event_handler("carbon_sent", lambda m: self.queue.put_nowait(("sent", m)))

    async def next(self) -> tuple[str, Any]:
        kind, wrapper = await asyncio.wait_for(self.queue.get(), TIMEOUT)
        assert wrapper["from"].full == wrapper["to"].bare  # from the user's own bare JID
        return kind, wrapper[f"carbon_{kind}"]


async def _device(connect: Connect, jid: str, *, carbons: bool = True) -> tuple[Client, Copies]:
    client = await connect(jid, plugins=PLUGINS)
    copies = Copies(client)
    if carbons:
        await client.plugin["xep_0280"].enable()
    return client, copies


def _send(client: Client, to: str, body: str, *extra: str) -> None:
    """A chat message, with extra empty child elements given in Clark notation."""
    message = client.make_message(mto=to, mbody=body, mtype="chat")
    for tag in extra:
        message.xml.append(ET.Element(tag))
    message.send()


async def test_both_sides_of_a_conversation_reach_both_devices(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    phone, phone_copies = await _device(connect, f"{alice}/phone")
    laptop, laptop_copies = await _device(connect, f"{alice}/laptop")
    bob = await connect(f"{bob_jid}/b")
    phone.send_presence(ppriority=10)
    laptop.send_presence(ppriority=1)
    for device in (phone, laptop):  # each sees both presences: the priorities are known
        await device.next_presence(alice)
        await device.next_presence(alice)

    bob.send_message(mto=alice, mbody="are you there?", mtype="chat")
    assert (await phone.next_message())["body"] == "are you there?"  # the top priority
    kind, original = await laptop_copies.next()
    assert kind == "received"
    assert (original["body"], original["from"].full) == ("are you there?", f"{bob_jid}/b")

    phone.send_message(mto=f"{bob_jid}/b", mbody="yes, on my phone", mtype="chat")
    assert (await bob.next_message())["body"] == "yes, on my phone"
    kind, original = await laptop_copies.next()
    assert kind == "sent"
    assert original["body"] == "yes, on my phone"
    assert (original["from"].full, original["to"].full) == (f"{alice}/phone", f"{bob_jid}/b")

    # The phone had the original of both, so it got no copy of either.
    assert phone_copies.queue.empty()
    assert laptop.messages.empty()


async def test_a_device_without_carbons_still_has_its_messages_copied_to_the_others(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    old_client, _ = await _device(connect, f"{alice}/old", carbons=False)
    _, laptop_copies = await _device(connect, f"{alice}/laptop")
    bob = await connect(f"{bob_jid}/b")
    old_client.send_message(mto=f"{bob_jid}/b", mbody="sent from an old client", mtype="chat")
    assert (await bob.next_message())["body"] == "sent from an old client"
    kind, original = await laptop_copies.next()
    assert (kind, original["body"]) == ("sent", "sent from an old client")


async def test_private_and_no_copy_messages_are_not_copied_and_keep_their_markers(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    phone, _ = await _device(connect, f"{alice}/phone")
    _, laptop_copies = await _device(connect, f"{alice}/laptop")
    bob = await connect(f"{bob_jid}/b")

    _send(phone, f"{bob_jid}/b", "private", f"{{{CARBONS}}}private")
    _send(phone, f"{bob_jid}/b", "no-copy", "{urn:xmpp:hints}no-copy")
    _send(phone, f"{bob_jid}/b", "for every device")
    first = await bob.next_message()
    assert first["body"] == "private"
    assert first.xml.find(f"{{{CARBONS}}}private") is not None  # delivered as sent (§9)
    assert (await bob.next_message())["body"] == "no-copy"
    assert (await bob.next_message())["body"] == "for every device"
    # Copies are made in the order the phone sent: the first copy is of the third message.
    assert (await laptop_copies.next())[1]["body"] == "for every device"

    _send(bob, f"{alice}/phone", "private back", f"{{{CARBONS}}}private")
    _send(bob, f"{alice}/phone", "no-copy back", "{urn:xmpp:hints}no-copy")
    _send(bob, f"{alice}/phone", "public back")
    kind, original = await laptop_copies.next()
    assert (kind, original["body"]) == ("received", "public back")


async def test_a_device_that_disabled_carbons_or_never_enabled_them_gets_no_copies(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    phone, phone_copies = await _device(connect, f"{alice}/phone", carbons=False)
    laptop, laptop_copies = await _device(connect, f"{alice}/laptop")
    _, tablet_copies = await _device(connect, f"{alice}/tablet")
    bob = await connect(f"{bob_jid}/b")
    await laptop.plugin["xep_0280"].disable()

    bob.send_message(mto=f"{alice}/phone", mbody="one", mtype="chat")
    assert (await phone.next_message())["body"] == "one"
    phone.send_message(mto=f"{bob_jid}/b", mbody="two", mtype="chat")
    assert (await bob.next_message())["body"] == "two"
    # The tablet shows that copies were made ...
    assert [
        (k, m["body"]) for k, m in [await tablet_copies.next(), await tablet_copies.next()]
    ] == [
        ("received", "one"),
        ("sent", "two"),
    ]
    # ... and a message to the laptop now comes after any copy it would have had: none.
    bob.send_message(mto=f"{alice}/laptop", mbody="three", mtype="chat")
    assert (await laptop.next_message())["body"] == "three"
    assert laptop_copies.queue.empty()
    assert phone_copies.queue.empty()


async def test_carbons_can_be_enabled_at_the_server_and_not_for_another_account(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    phone = await connect(f"{alice}/phone", plugins=PLUGINS)
    iq = phone.make_iq_set(ito=roost_server.domain)
    iq.enable("carbon_enable")
    assert (await iq.send())["type"] == "result"
    carbons = roost_server.server.modules["carbons"]
    assert isinstance(carbons, CarbonsModule)
    assert {str(s.jid) for s in carbons.enabled_sessions(alice)} == {f"{alice}/phone"}

    bob = await connect(f"{bob_jid}/b", plugins=PLUGINS)
    iq = bob.make_iq_set(ito=alice)
    iq.enable("carbon_enable")
    with pytest.raises(IqError) as refused:
        await iq.send()
    assert refused.value.iq["error"]["condition"] == "not-allowed"


async def test_disco_advertises_carbons(roost_server: RunningServer, connect: Connect) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(jid)
    info = await client.plugin["xep_0030"].get_info(jid=roost_server.domain)
    assert CARBONS in info["disco_info"]["features"]


# -- the wire ------------------------------------------------------------------------------


async def _raw(server: RunningServer, user: str, resource: str) -> RawClient:
    return await RawClient.logged_in(
        server.host, server.port, user, cert=server.cert, resource=resource
    )


async def test_received_and_sent_carbons_on_the_wire(roost_server: RunningServer) -> None:
    alice = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    laptop = await _raw(roost_server, alice, "laptop")
    phone = await _raw(roost_server, alice, "phone")
    bob = await _raw(roost_server, bob_jid, "b")
    # Carbons without initial presence: the session asked for them (see the module docstring).
    await laptop.send(f"<iq type='set' id='c1'><enable xmlns='{CARBONS}'/></iq>")
    enabled = await laptop.expect("iq")
    assert (enabled.attrs["type"], enabled.attrs["id"]) == ("result", "c1")

    await bob.send(
        f"<message to='{alice}/phone' type='chat' id='m1'><body>hi</body>"
        "<thread>t1</thread></message>"
    )
    carbon = await laptop.expect("message")
    assert carbon.attrs == {"from": alice, "to": f"{alice}/laptop", "type": "chat"}
    (received,) = carbon.elements()
    assert (received.name, received.xmlns) == ("received", CARBONS)
    (forwarded,) = received.elements()
    assert (forwarded.name, forwarded.xmlns) == ("forwarded", FORWARD)
    (original,) = forwarded.elements()
    assert (original.name, original.xmlns) == ("message", ns.CLIENT)
    assert original.attrs == {
        "to": f"{alice}/phone",
        "type": "chat",
        "id": "m1",
        "from": f"{bob_jid}/b",
    }
    assert (original.find_text("body"), original.find_text("thread")) == ("hi", "t1")
    assert (await phone.expect("message")).find_text("body") == "hi"

    await phone.send(f"<message to='{bob_jid}' type='chat' id='m2'><body>hello</body></message>")
    carbon = await laptop.expect("message")
    assert carbon.attrs == {"from": alice, "to": f"{alice}/laptop", "type": "chat"}
    sent = carbon.find("sent", CARBONS)
    assert sent is not None
    forwarded_sent = sent.find("forwarded", FORWARD)
    assert forwarded_sent is not None
    copied = forwarded_sent.find("message", ns.CLIENT)
    assert copied is not None
    assert copied.attrs == {
        "to": bob_jid,
        "type": "chat",
        "id": "m2",
        "from": f"{alice}/phone",
    }
    for client in (laptop, phone, bob):
        await client.close()


async def test_chat_states_are_copied_and_groupchat_is_not(roost_server: RunningServer) -> None:
    alice = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    laptop = await _raw(roost_server, alice, "laptop")
    phone = await _raw(roost_server, alice, "phone")
    await laptop.send(f"<iq type='set' id='c1'><enable xmlns='{CARBONS}'/></iq>")
    await laptop.expect("iq")
    chat_states = "http://jabber.org/protocol/chatstates"
    await phone.send(f"<message to='{bob_jid}' type='groupchat'><body>not mine</body></message>")
    await phone.send(
        f"<message to='{bob_jid}' type='chat'><composing xmlns='{chat_states}'/></message>"
    )
    carbon = await laptop.expect("message")
    sent = carbon.find("sent", CARBONS)
    assert sent is not None
    forwarded = sent.find("forwarded", FORWARD)
    assert forwarded is not None
    original = forwarded.find("message", ns.CLIENT)
    assert original is not None
    assert original.find("composing", chat_states) is not None
    await laptop.close()
    await phone.close()


async def test_enabling_needs_an_iq_set_with_enable_or_disable(roost_server: RunningServer) -> None:
    alice = await roost_server.create_user("alice")
    client = await _raw(roost_server, alice, "phone")
    await client.send(f"<iq type='get' id='g1'><enable xmlns='{CARBONS}'/></iq>")
    reply = await client.expect("iq")
    assert reply.attrs["type"] == "error"
    error = reply.find("error")
    assert error is not None
    assert error.find("bad-request", ns.STANZAS) is not None
    await client.close()
