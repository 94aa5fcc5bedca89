"""Per-sender order where a user's messages change paths: offline storage, coming online,
and a session that ends while it is still busy.

Each test holds one step of the server's work (a store, a presence broadcast, a stanza being
handled) while the next message to the same user arrives by another path, then lets it go:
the recipient must see the two messages in the order they were sent. Every case here was a
real reorder found by the loss test (tests/e2e/test_loss.py) run under heavier cuts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roost.c2s.session import C2SSession
from roost.core.server import Server
from roost.modules.mam import MamModule
from roost.storage.base import ArchivePrefs, RosterItem
from roost.testing import RunningServer
from roost.testing.rawclient import RawClient
from roost.testing.smclient import SMClient
from roost.xmpp.element import Element
from roost.xmpp.jid import parse_jid
from tests.e2e.conftest import TIMEOUT, held_in_hook

PING = "<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


def _chat(to: str, body: str) -> str:
    return f"<message to='{to}' type='chat'><body>{body}</body></message>"


async def _with_accounts(roost_server: RunningServer, *users: str) -> Server:
    """The running server, with an account for each of ``users``."""
    for user in users:
        await roost_server.create_user(user)
    return roost_server.server


async def _logged_in(server: RunningServer, user: str) -> RawClient:
    return await RawClient.logged_in(server.host, server.port, user, cert=server.cert, resource="r")


async def _handled(client: RawClient) -> None:
    """A round trip: everything the client sent before has been handled by the server."""
    await client.send(PING)
    await client.expect("iq")


async def _bodies_until_pong(client: RawClient) -> list[str | None]:
    """The bodies of the messages that reach ``client`` before the answer to a ping."""
    await client.send(PING)
    bodies: list[str | None] = []
    while True:
        element = await client.next_element()
        if element.name == "iq":
            return bodies
        if element.name == "message":
            bodies.append(element.find_text("body"))


def _slowed(
    monkeypatch: pytest.MonkeyPatch, storage: Any, method: str, user: str
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the store's ``method``, called for ``user``, wait until the second event is set.
    Returns (such a call started, release)."""
    started, release = asyncio.Event(), asyncio.Event()
    original = getattr(type(storage), method)

    async def slowed(self: Any, owner: str, *args: Any) -> Any:
        if owner == user:
            started.set()
            await release.wait()
        return await original(self, owner, *args)

    monkeypatch.setattr(type(storage), method, slowed)
    return started, release


async def test_a_message_stored_while_the_user_comes_online_is_not_overtaken(
    roost_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "one" is on its way into offline storage when bob sends his initial presence; "two"
    # comes after. Read before "one" was stored, the store would hand bob nothing, "two"
    # would go to him live, and "one" would wait for his next login.
    server = await _with_accounts(roost_server, "alice", "bob", "carol")
    storing, release = _slowed(monkeypatch, server.storage, "store_offline", "bob@localhost")
    alice = await _logged_in(roost_server, "alice")
    carol = await _logged_in(roost_server, "carol")
    await alice.send(_chat("bob@localhost", "one"))
    await asyncio.wait_for(storing.wait(), TIMEOUT)
    bob = await _logged_in(roost_server, "bob")
    await bob.send("<presence/>")
    await bob.expect("presence")  # bob is available
    await carol.send(_chat("bob@localhost", "two"))
    await _handled(carol)
    release.set()
    assert await _bodies_until_pong(bob) == ["one", "two"]
    assert await server.storage.count_offline("bob@localhost") == 0


async def test_live_messages_wait_while_initial_presence_is_still_being_announced(
    roost_server: RunningServer,
) -> None:
    # Between becoming available and replaying offline storage, bob's initial presence is
    # still going out (here: to carol, held). A live message arriving then must not reach him
    # before the stored one sent earlier.
    server = await _with_accounts(roost_server, "alice", "bob", "carol")
    await server.storage.put_roster_item(
        "bob@localhost", RosterItem("carol@localhost", subscription="from")
    )
    alice = await _logged_in(roost_server, "alice")
    await alice.send(_chat("bob@localhost", "one"))
    await _handled(alice)
    announcing, release = held_in_hook(
        server,
        "router.presence",
        lambda stanza: stanza.attrs.get("to") == "carol@localhost" and not stanza.attrs.get("type"),
    )
    bob = await _logged_in(roost_server, "bob")
    await bob.send("<presence/>")
    await asyncio.wait_for(announcing.wait(), TIMEOUT)  # bob is available, still announcing
    await alice.send(_chat("bob@localhost", "two"))
    await _handled(alice)
    release.set()
    assert await _bodies_until_pong(bob) == ["one", "two"]


@pytest.mark.roost_config(sm_timeout=60)
async def test_what_a_busy_expired_session_held_is_not_overtaken_by_later_messages(
    roost_server: RunningServer,
) -> None:
    # bob's session is detached and still busy (a stanza he sent is being handled) when its
    # resumption window closes, with "one" queued for him. bob comes back with a new session
    # before the old one is done: "two", sent after "one", must not reach him first.
    server = await _with_accounts(roost_server, "alice", "bob")
    bob = SMClient(roost_server.host, roost_server.port, "bob", cert=roost_server.cert)
    await bob.start()
    await bob.send("<presence/>")
    await bob.all_acknowledged()
    old = server.sessions.get(parse_jid("bob@localhost/sm"))
    assert isinstance(old, C2SSession)
    held, release = held_in_hook(server, "c2s.inbound", lambda s: s.find_text("body") == "held")
    detached = asyncio.Event()
    server.hooks.add("c2s.detached", lambda session: detached.set())
    await bob.send(_chat("alice@localhost", "held"))
    await asyncio.wait_for(held.wait(), TIMEOUT)
    bob.abort()
    await asyncio.wait_for(detached.wait(), TIMEOUT)
    alice = await _logged_in(roost_server, "alice")
    await alice.send(_chat("bob@localhost", "one"))  # queued for bob, who is away
    await _handled(alice)
    now = asyncio.get_running_loop().time()
    for session in server.resumption.expired(now + 61):
        session.expire()
    await server.settle()
    again = await RawClient.logged_in(
        roost_server.host, roost_server.port, "bob", cert=roost_server.cert, resource="sm"
    )
    await again.send("<presence/>")
    await again.expect("presence")
    await alice.send(_chat("bob@localhost", "two"))
    await _handled(alice)
    release.set()
    await asyncio.wait_for(old.settled(), TIMEOUT)  # the old session is done ...
    await server.settle()  # ... and so is whatever it routed again
    assert await _bodies_until_pong(again) == ["one", "two"]


async def test_stored_messages_stay_stored_when_the_connection_drops_during_the_replay(
    roost_server: RunningServer,
) -> None:
    # bob's connection goes away while his stored messages are being written to him: what
    # was not written yet stays stored for his next login, rather than being written into a
    # dead socket and deleted.
    server = await _with_accounts(roost_server, "alice", "bob")
    alice = await _logged_in(roost_server, "alice")
    for i in range(3):
        await alice.send(_chat("bob@localhost", f"stored {i}"))
    await _handled(alice)
    assert await server.storage.count_offline("bob@localhost") == 3
    bob = await _logged_in(roost_server, "bob")
    session = server.sessions.get(parse_jid("bob@localhost/r"))
    assert isinstance(session, C2SSession)

    def drop_at_the_first(stanza: Element, to: C2SSession) -> Element:
        if to is session and stanza.name == "message":
            session.connection.abort()  # the phone went into a tunnel
        return stanza

    server.hooks.add("c2s.outbound", drop_at_the_first, priority=1)
    await bob.send("<presence/>")
    await asyncio.wait_for(bob.closed(), TIMEOUT)
    await asyncio.wait_for(session.settled(), TIMEOUT)
    # The first was on its way out when the connection went; the other two were never written.
    stored = await server.storage.fetch_offline("bob@localhost")
    assert len(stored) == 2
    assert "stored 1" in stored[0].stanza
    assert "stored 2" in stored[1].stanza


@pytest.mark.roost_config(sm_timeout=60)
async def test_messages_routed_again_keep_their_order_while_archiving_preferences_load(
    roost_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bob archives nothing, so the messages queued for him carry no stanza-id, and routing
    # one again asks for his archiving preferences once more. His session expires with "one"
    # and "two" unconfirmed while those preferences are not cached: each waits for them to
    # load, and so does "three", sent meanwhile. Once loaded, the three go to offline storage
    # in the order they were sent.
    server = await _with_accounts(roost_server, "alice", "bob", "carol")
    await server.storage.set_archive_prefs("bob@localhost", ArchivePrefs(default="never"))
    bob = SMClient(roost_server.host, roost_server.port, "bob", cert=roost_server.cert)
    await bob.start()
    await bob.send("<presence/>")
    await bob.all_acknowledged()
    detached = asyncio.Event()
    server.hooks.add("c2s.detached", lambda session: detached.set())
    bob.abort()
    await asyncio.wait_for(detached.wait(), TIMEOUT)
    alice = await _logged_in(roost_server, "alice")
    for body in ("one", "two"):
        await alice.send(_chat("bob@localhost", body))  # queued for bob, who is away
    await _handled(alice)
    mam = server.modules["mam"]
    assert isinstance(mam, MamModule)
    mam._prefs.pop("bob@localhost")  # evicted from the cache, as under many users
    loading, release = _slowed(monkeypatch, server.storage, "get_archive_prefs", "bob@localhost")
    now = asyncio.get_running_loop().time()
    for session in server.resumption.expired(now + 61):
        session.expire()
    await asyncio.wait_for(loading.wait(), TIMEOUT)
    carol = await _logged_in(roost_server, "carol")
    routed = asyncio.Event()

    def note_three(stanza: Element, to: Any) -> Element:
        if stanza.find_text("body") == "three":
            routed.set()
        return stanza

    server.hooks.add("router.message", note_three, priority=1)
    await carol.send(_chat("bob@localhost", "three"))
    await asyncio.wait_for(routed.wait(), TIMEOUT)
    release.set()
    await _handled(carol)
    await server.settle()
    stored = await server.storage.fetch_offline("bob@localhost")
    bodies = [body for m in stored for body in ("one", "two", "three") if f">{body}<" in m.stanza]
    assert bodies == ["one", "two", "three"]
