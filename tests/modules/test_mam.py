"""The archiving module inside a running server: batching, the slow path, routing again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.config import ServerConfig
from roost.gate.storage import GatedStorage
from roost.modules.mam import MamModule
from roost.modules.mam_protocol import SID
from roost.modules.mam_records import Stamped
from roost.storage.base import ArchiveQuery
from roost.storage.sqlite import SQLiteStorage
from roost.testing import RunningServer, running_server
from roost.testing.rawclient import RawClient
from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.parser import parse_element

MODULES = [*ServerConfig().modules, "mam"]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "roost", modules=MODULES) as running:
        yield running


def module(server: RunningServer) -> MamModule:
    found = server.server.modules["mam"]
    assert isinstance(found, MamModule)
    return found


async def online(server: RunningServer, name: str) -> tuple[str, RawClient]:
    jid = await server.create_user(name)
    client = await RawClient.logged_in(server.host, server.port, jid, cert=server.cert)
    await client.send("<presence/>")
    await client.expect("presence")
    return jid, client


async def archived_bodies(server: RunningServer, owner: str) -> list[str | None]:
    await module(server).flush()
    page = await server.server.storage.query_archive(owner, ArchiveQuery(limit=1000))
    return [parse_element(m.stanza).find_text("body") for m in page.messages]


def stanza_ids(message: Element, by: str) -> list[str]:
    return [s.attrs["id"] for s in message.elements("stanza-id", SID) if s.attrs["by"] == by]


async def test_a_burst_of_messages_is_written_in_a_few_storage_calls(
    server: RunningServer,
) -> None:
    bob_jid, bob = await online(server, "bob")
    alice_jid, alice = await online(server, "alice")
    storage = server.server.storage
    assert isinstance(storage, GatedStorage)  # the store behind its gate (roost.gate)
    storage = storage.inner
    assert isinstance(storage, SQLiteStorage)
    await module(server).flush()
    before = storage.statistics().operations
    await alice.send(
        "".join(
            f"<message to='{bob_jid}' type='chat'><body>{i}</body></message>" for i in range(300)
        )
    )
    for _ in range(300):
        await bob.expect("message")
    await module(server).flush()
    # 600 archive records (both copies of each message); delivering to an online user
    # touches no storage, so every operation here is an archive write.
    operations = storage.statistics().operations - before
    assert 1 <= operations <= 30
    assert await archived_bodies(server, alice_jid) == [str(i) for i in range(300)]
    assert await archived_bodies(server, bob_jid) == [str(i) for i in range(300)]


async def test_a_message_routed_again_keeps_its_id_and_is_archived_once(
    server: RunningServer,
) -> None:
    bob_jid, bob = await online(server, "bob")
    _alice_jid, alice = await online(server, "alice")
    await alice.send(f"<message to='{bob_jid}' type='chat'><body>once</body></message>")
    delivered = await bob.expect("message")
    (first_id,) = stanza_ids(delivered, bob_jid)
    # As stream management does with what a vanished client never acknowledged.
    pending = server.server.router.route(delivered)
    assert pending is None
    again = await bob.expect("message")
    assert stanza_ids(again, bob_jid) == [first_id]
    assert await archived_bodies(server, bob_jid) == ["once"]


async def test_without_cached_prefs_messages_wait_for_them_and_keep_their_order(
    server: RunningServer,
) -> None:
    bob_jid, bob = await online(server, "bob")
    alice_jid, alice = await online(server, "alice")
    mam = module(server)
    await mam.flush()
    mam._prefs.clear()  # as after a restart of the cache: every decision needs storage first
    await alice.send(
        "".join(f"<message to='{bob_jid}' type='chat'><body>{i}</body></message>" for i in range(5))
        + f"<message to='{bob_jid}' type='headline'><body>end</body></message>"
    )
    got = [await bob.expect("message") for _ in range(6)]
    assert [m.find_text("body") for m in got] == ["0", "1", "2", "3", "4", "end"]
    assert all(len(stanza_ids(m, bob_jid)) == 1 for m in got[:5])  # each delivered once
    assert await archived_bodies(server, alice_jid) == [str(i) for i in range(5)]
    assert await archived_bodies(server, bob_jid) == [str(i) for i in range(5)]
    archived = await server.server.storage.query_archive(bob_jid, ArchiveQuery())
    assert [m.id for m in archived.messages] == [stanza_ids(m, bob_jid)[0] for m in got[:5]]


async def test_a_message_to_an_unknown_user_bounces_and_only_the_sender_keeps_it(
    server: RunningServer,
) -> None:
    alice_jid, alice = await online(server, "alice")
    await alice.send("<message to='ghost@localhost' type='chat'><body>boo</body></message>")
    error = await alice.expect("message")
    assert error.attrs["type"] == "error"
    assert await archived_bodies(server, alice_jid) == ["boo"]
    assert await archived_bodies(server, "ghost@localhost") == []


async def test_flush_with_nothing_buffered_returns_at_once(server: RunningServer) -> None:
    await module(server).flush()


async def test_when_the_archive_falls_behind_senders_wait_and_nothing_is_lost(
    server: RunningServer,
) -> None:
    module(server).path.high_water = 10
    bob_jid, bob = await online(server, "bob")
    alice_jid, alice = await online(server, "alice")
    await alice.send(
        "".join(
            f"<message to='{bob_jid}' type='chat'><body>{i}</body></message>" for i in range(300)
        )
    )
    got = [await bob.expect("message") for _ in range(300)]
    assert [m.find_text("body") for m in got] == [str(i) for i in range(300)]
    assert all(len(stanza_ids(m, bob_jid)) == 1 for m in got)
    assert await archived_bodies(server, alice_jid) == [str(i) for i in range(300)]
    assert await archived_bodies(server, bob_jid) == [str(i) for i in range(300)]
    assert module(server).path.refused == 0
    assert module(server).waited > 0  # the buffer did fill up


# -- the recipient's copy as delivered -----------------------------------------------------


def routed() -> Element:
    return parse_element(
        "<message xmlns='jabber:client' to='bob@localhost/phone' type='chat'"
        ' from="alice@localhost/it\'s me"><body>1 &lt; 2 &amp; 3</body>'
        "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )


def stamped(stanza: Element) -> tuple[Stamped, Element]:
    """The delivered copy as the module makes it, and the same made the ordinary way."""
    text = (stanza.to_str(), stanza.attrs.copy(), stanza.children.copy())
    sid = Element("stanza-id", SID, {"by": "bob@localhost", "id": "0123456789abcdef"})
    ordinary = stanza.shallow_copy()
    ordinary.children.append(sid)
    return Stamped(stanza, "bob@localhost", "0123456789abcdef", text), ordinary


def test_the_delivered_copy_is_the_archived_text_with_the_stanza_id_spliced_in() -> None:
    delivered, ordinary = stamped(routed())
    assert delivered.to_bytes() == Element.to_str(delivered).encode()
    assert delivered.to_bytes() == ordinary.to_bytes()
    assert delivered == ordinary


def test_a_delivered_copy_inside_another_element_is_serialized_the_ordinary_way() -> None:
    delivered, ordinary = stamped(routed())
    forwarded = Element("forwarded", "urn:xmpp:forward:0", None, [delivered])
    wrapped = Element("forwarded", "urn:xmpp:forward:0", None, [ordinary])
    assert forwarded.to_str() == wrapped.to_str()
    assert delivered.to_str(ns.SM) == ordinary.to_str(ns.SM)


def test_a_delivered_copy_changed_after_it_was_made_is_serialized_as_it_is() -> None:
    delivered, _ = stamped(routed())
    delivered.attrs["to"] = "bob@localhost/laptop"
    delivered.children.insert(0, Element("thread", ns.CLIENT, None, ["t1"]))
    text = delivered.to_str()
    assert "bob@localhost/laptop" in text
    assert "<thread>t1</thread>" in text
    assert text == Element.to_str(delivered)
    emptied, _ = stamped(routed())
    emptied.children.clear()
    assert emptied.to_str() == Element.to_str(emptied)
    restamped, _ = stamped(routed())
    sid = restamped.children[-1]
    assert isinstance(sid, Element)
    sid.attrs["id"] = "it's"
    assert restamped.to_str() == Element.to_str(restamped)
    sid.attrs["extra"] = "1"
    assert restamped.to_str() == Element.to_str(restamped)
    assert "extra='1'" in restamped.to_str()


def test_a_message_changed_after_it_was_archived_is_delivered_as_it_is() -> None:
    stanza = routed()
    text = (stanza.to_str(), stanza.attrs.copy(), stanza.children.copy())
    stanza.attrs["id"] = "changed"
    stanza.children.append(Element("thread", ns.CLIENT, None, ["t1"]))
    delivered = Stamped(stanza, "bob@localhost", "0123456789abcdef", text)
    assert delivered.to_str() == Element.to_str(delivered)
    assert "id='changed'" in delivered.to_str()
