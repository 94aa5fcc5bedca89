"""Client State Indication (XEP-0352) with slixmpp, and the exact order of stanzas on the wire."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roost.c2s.session import C2SSession
from roost.config import ServerConfig
from roost.modules.csi import CSI, CSIModule
from roost.testing import RunningServer
from roost.testing.rawclient import RawClient, client_context
from roost.testing.smclient import SMClient
from roost.xmpp.element import Element
from roost.xmpp.jid import parse_jid
from tests.e2e.conftest import TIMEOUT, Client, Connect

MODULES = [*ServerConfig().modules, "csi"]
PLUGINS = ("xep_0030", "xep_0199", "xep_0085", "xep_0352")
CHAT_STATES = "http://jabber.org/protocol/chatstates"

pytestmark = pytest.mark.roost_config(modules=MODULES)


def _csi(server: RunningServer) -> CSIModule:
    module = server.server.modules["csi"]
    assert isinstance(module, CSIModule)
    return module


def _session(server: RunningServer, jid: str) -> C2SSession:
    session = server.server.sessions.get(parse_jid(jid))
    assert isinstance(session, C2SSession)
    return session


class Seen:
    """Presence, chat states and messages one slixmpp client receives, in one ordered list."""

    def __init__(self, client: Client) -> None:
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        client.add_event_handler("presence_available", self._presence)
        client.add_event_handler("chatstate", self._chat_state)
        client.add_event_handler("message", self._message)

    def _presence(self, presence: Any) -> None:
        self.queue.put_nowait(("presence", presence["status"]))

    def _chat_state(self, message: Any) -> None:
        if not message["body"]:
            self.queue.put_nowait(("chat state", message["chat_state"]))

    def _message(self, message: Any) -> None:
        self.queue.put_nowait(("message", message["body"]))

    async def next(self, count: int) -> list[tuple[str, str]]:
        return [await asyncio.wait_for(self.queue.get(), TIMEOUT) for _ in range(count)]


async def _contacts(connect: Connect, server: RunningServer) -> tuple[Client, Client, str]:
    """Alice and Bob, subscribed to each other and available; returns Bob's full JID."""
    alice_jid = await server.create_user("alice")
    bob_jid = await server.create_user("bob")
    alice = await connect(f"{alice_jid}/a", plugins=PLUGINS)
    bob = await connect(f"{bob_jid}/phone", plugins=PLUGINS)
    for client in (alice, bob):
        await client.get_roster()
        client.send_presence()
        client.auto_authorize = True
    bob.auto_subscribe = True
    alice.send_presence_subscription(pto=bob_jid)
    await alice.roster_until(lambda: alice.client_roster[bob_jid]["subscription"] == "both")
    await bob.roster_until(lambda: bob.client_roster[alice_jid]["subscription"] == "both")
    alice.send_presence(pstatus="before")
    while (await bob.next_presence(alice_jid))["status"] != "before":
        pass
    return alice, bob, f"{bob_jid}/phone"


def _chat_state(client: Client, to: str, state: str) -> None:
    message = client.make_message(mto=to, mtype="chat")
    message["chat_state"] = state
    message.send()


async def _go_inactive(client: Client, server: RunningServer) -> None:
    assert client.plugin["xep_0352"].enabled  # the server offered CSI
    client.plugin["xep_0352"].send_inactive()
    await client.plugin["xep_0199"].ping(server.domain)  # handled in order: inactive by now


async def _presence_and_chat_states(alice: Client, bob_full: str, server: RunningServer) -> None:
    alice.send_presence(pstatus="one")
    alice.send_presence(pstatus="two")
    _chat_state(alice, bob_full, "composing")
    _chat_state(alice, bob_full, "paused")
    await alice.plugin["xep_0199"].ping(server.domain)  # all of it handled by now


async def test_an_inactive_client_gets_presence_and_chat_states_only_before_a_message(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice, bob, bob_full = await _contacts(connect, roost_server)
    await _go_inactive(bob, roost_server)
    seen = Seen(bob)

    await _presence_and_chat_states(alice, bob_full, roost_server)
    held = _csi(roost_server).held(_session(roost_server, bob_full))
    # Only the latest presence and the latest chat state wait, nothing was written.
    assert [(e.name, e.find_text("status")) for e in held] == [
        ("presence", "two"),
        ("message", None),
    ]
    assert held[1].find("paused", CHAT_STATES) is not None
    assert seen.queue.empty()

    alice.send_message(mto=bob_full, mbody="wake up", mtype="chat")
    assert await seen.next(3) == [
        ("presence", "two"),
        ("chat state", "paused"),
        ("message", "wake up"),
    ]
    assert _csi(roost_server).held(_session(roost_server, bob_full)) == []


async def test_becoming_active_delivers_everything_held(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice, bob, bob_full = await _contacts(connect, roost_server)
    await _go_inactive(bob, roost_server)
    seen = Seen(bob)
    await _presence_and_chat_states(alice, bob_full, roost_server)
    assert len(_csi(roost_server).held(_session(roost_server, bob_full))) == 2

    bob.plugin["xep_0352"].send_active()
    assert await seen.next(2) == [("presence", "two"), ("chat state", "paused")]
    assert not _csi(roost_server).inactive(_session(roost_server, bob_full))
    # Active again: presence flows at once.
    alice.send_presence(pstatus="three")
    assert await seen.next(1) == [("presence", "three")]


# -- the wire ------------------------------------------------------------------------------


async def _raw(server: RunningServer, user: str, resource: str) -> RawClient:
    return await RawClient.logged_in(
        server.host, server.port, user, cert=server.cert, resource=resource
    )


async def test_csi_is_offered_only_after_authentication(roost_server: RunningServer) -> None:
    await roost_server.create_user("alice")
    client = await RawClient.connect(roost_server.host, roost_server.port)
    await client.open_stream()
    await client.starttls(client_context(roost_server.cert))
    before = await client.open_stream()
    assert before.find("csi", CSI) is None
    assert (await client.auth_plain("alice", "secret")).name == "success"
    after = await client.open_stream(restart=True)
    assert after.find("csi", CSI) == Element("csi", CSI)
    await client.close()


async def test_held_stanzas_go_out_in_order_before_the_first_urgent_one(
    roost_server: RunningServer,
) -> None:
    alice = await roost_server.create_user("alice")
    bob = await roost_server.create_user("bob")
    sender = await _raw(roost_server, alice, "a")
    phone = await _raw(roost_server, bob, "phone")
    # <inactive/> has no answer: the next thing the phone gets is the reply to its ping.
    await phone.send(
        f"<inactive xmlns='{CSI}'/><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    pong = await phone.next_element()
    assert (pong.name, pong.attrs["id"], pong.attrs["type"]) == ("iq", "p1", "result")

    to = f"{bob}/phone"
    await sender.send(
        f"<presence to='{to}'><status>1</status></presence>"
        f"<message to='{to}' type='chat'><composing xmlns='{CHAT_STATES}'/></message>"
        f"<presence to='{to}'><status>2</status></presence>"
        f"<message to='{to}' type='chat'><thread>t</thread><paused xmlns='{CHAT_STATES}'/>"
        "</message>"
        f"<message to='{to}'><received xmlns='urn:xmpp:receipts' id='r1'/></message>"
    )
    # A receipt is urgent: it brings the held ones first, the newest of each kind.
    first, second, third = [await phone.next_element() for _ in range(3)]
    assert (first.name, first.find_text("status")) == ("presence", "2")
    assert second.find("paused", CHAT_STATES) is not None
    assert third.find("received", "urn:xmpp:receipts") is not None

    await sender.send(f"<presence to='{to}'><status>3</status></presence>")
    await sender.send(f"<message to='{to}' type='chat'><body>hello</body></message>")
    held, message = await phone.next_element(), await phone.next_element()
    assert (held.find_text("status"), message.find_text("body")) == ("3", "hello")
    await sender.close()
    await phone.close()


async def test_an_unknown_csi_element_is_a_stream_error(roost_server: RunningServer) -> None:
    alice = await roost_server.create_user("alice")
    client = await _raw(roost_server, alice, "a")
    await client.send(f"<asleep xmlns='{CSI}'/>")
    assert await client.stream_error() == "unsupported-stanza-type"
    assert await client.closed()


async def test_a_resumed_stream_is_active(roost_server: RunningServer) -> None:
    alice = await roost_server.create_user("alice")
    bob = await roost_server.create_user("bob")
    sender = await _raw(roost_server, alice, "a")
    phone = SMClient(
        roost_server.host, roost_server.port, bob, cert=roost_server.cert, resource="phone"
    )
    received: asyncio.Queue[Element] = asyncio.Queue()
    phone.on_stanza = received.put_nowait
    await phone.start()
    assert phone.raw is not None
    await phone.raw.send(f"<inactive xmlns='{CSI}'/>")  # a nonza: not counted by SM
    to = f"{bob}/phone"
    await sender.send(f"<presence to='{to}'><status>held</status></presence>")
    await sender.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    await sender.expect("iq")
    session = _session(roost_server, to)
    assert [e.find_text("status") for e in _csi(roost_server).held(session)] == ["held"]

    phone.abort()
    assert await phone.resume()
    # The same session goes on, active: what it held goes out before the next presence,
    # which is not held.
    await sender.send(f"<presence to='{to}'><status>after</status></presence>")
    statuses = [
        (await asyncio.wait_for(received.get(), TIMEOUT)).find_text("status") for _ in range(2)
    ]
    assert statuses == ["held", "after"]
    assert not _csi(roost_server).inactive(session)
    await phone.close()
    await sender.close()
