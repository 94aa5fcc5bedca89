"""roost.cluster.forwarding: a forwarded stanza reaches the client as the text that was sent.

The receiving node parses each forwarded stanza once, with one long-lived parser, into a
``KnownText`` that writes the received text back while unchanged and serializes the ordinary
way once something changed it. The tests check that text against what the sending node would
have written itself, and that nothing about the at-least-once bookkeeping changed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from roost.cluster import forwarding
from roost.cluster.forwarding import Forwarder, StanzaReader
from roost.cluster.mesh import Mesh
from roost.cluster.mesh_testing import TIMEOUT, LocalCluster
from roost.xmpp import ns
from roost.xmpp.element import Element, KnownText
from roost.xmpp.errors import StreamError
from roost.xmpp.jid import JID
from roost.xmpp.parser import parse_element

CHAT = (
    "<message to='bob@example.com/r' type='chat' id='m1' from='alice@example.com/r'>"
    "<body>hi &amp; &lt;bye&gt;</body>"
    "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.com' id='abc'/></message>"
)


def _read(text: str) -> KnownText:
    return StanzaReader(1 << 20).read(text)


# -- KnownText ----------------------------------------------------------------------------------


def test_an_unchanged_element_writes_its_text() -> None:
    stanza = _read(CHAT)
    assert stanza.to_str() is stanza.to_str()  # the text itself, no walk
    assert stanza.to_str() == CHAT
    assert stanza.to_bytes() == CHAT.encode()
    assert stanza == parse_element(CHAT)
    # The text is what Element would have written anyway.
    assert Element.to_str(stanza) == CHAT


def test_the_text_is_written_as_received() -> None:
    # Double quotes: this text is not what Element writes, which shows which one is used.
    text = '<message to="bob@example.com" type="chat"><body>hi</body></message>'
    stanza = _read(text)
    assert stanza.to_str() == text
    assert stanza.to_str("") == parse_element(text).to_str("")  # another parent: a walk


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.attrs.__setitem__("to", "carol@example.com"),
        lambda s: s.attrs.__setitem__("xml:lang", "en"),
        lambda s: s.attrs.pop("id"),
        lambda s: s.add("delay", ns.DELAY, {"stamp": "2024-01-01T00:00:00Z"}),
        lambda s: s.remove(next(s.elements("stanza-id"))),
        lambda s: s.children.__setitem__(0, Element("subject", ns.CLIENT, {}, ["new"])),
        lambda s: setattr(s, "text", "loose text"),
    ],
)
def test_a_changed_element_is_serialized_again(change: Any) -> None:
    text = CHAT.replace("'", '"')
    stanza = _read(text)
    expected = parse_element(text)
    change(stanza)
    change(expected)
    assert stanza.to_str() == expected.to_str()
    assert stanza.to_str() != text
    assert stanza.to_bytes() == expected.to_bytes()


def test_copies_are_plain_elements() -> None:
    stanza = _read(CHAT)
    for copy in (stanza.copy(), stanza.shallow_copy()):
        assert type(copy) is Element
        assert copy.to_str() == CHAT
    changed = stanza.shallow_copy()
    changed.attrs["to"] = "carol@example.com"
    assert stanza.to_str() == CHAT
    assert "carol" in changed.to_str()


def test_inside_another_element_it_is_serialized_the_ordinary_way() -> None:
    stanza = _read(CHAT.replace("'", '"'))
    wrapper = Element("forwarded", "urn:xmpp:forward:0", {}, [stanza])
    expected = Element("forwarded", "urn:xmpp:forward:0", {}, [parse_element(CHAT)])
    assert wrapper.to_str() == expected.to_str()


# -- StanzaReader -------------------------------------------------------------------------------


def test_the_reader_reads_stanza_after_stanza() -> None:
    reader = StanzaReader(1 << 20)
    texts = [
        CHAT,
        "<presence/>",
        "<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<message><body>with\ttabs</body></message>\n",
        "<stream:error><x xmlns='urn:example'/></stream:error>",
    ]
    for _ in range(3):
        for text in texts:
            stanza = reader.read(text)
            assert stanza == parse_element(text)
            assert stanza.to_str() == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "<message/><message/>",
        "<message>",
        "<message></message",
        "<message/>text",
        "text<message/>",
        "<message/></stream:stream>",
        "</stream:stream>",
        "<message><!-- no --></message>",
        "<?pi x?><message/>",
        "<message><body>&unknown;</body></message>",
        "<x:message/>",
    ],
)
def test_the_reader_refuses_what_parse_element_refuses(text: str) -> None:
    with pytest.raises(StreamError):
        parse_element(text)
    reader = StanzaReader(1 << 20)
    reader.read("<presence/>")
    with pytest.raises(StreamError):
        reader.read(text)
    # A new parser reads what comes next.
    assert reader.read(CHAT).to_str() == CHAT


def test_the_reader_takes_a_new_parser_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarding, "RENEW_AFTER", 3 * len(CHAT))
    reader = StanzaReader(1 << 20)
    parsers = set()
    for _ in range(20):
        assert reader.read(CHAT).to_str() == CHAT
        parsers.add(id(reader._parser))
    assert len(parsers) > 3


def test_the_reader_bounds_a_stanza() -> None:
    reader = StanzaReader(100)
    with pytest.raises(StreamError):
        reader.read(f"<message><body>{'x' * 200}</body></message>")
    assert reader.read("<presence/>").to_str() == "<presence/>"


# -- two nodes ----------------------------------------------------------------------------------


class _Session:
    """A local session as the receiving forwarder sees it: writes what it is given."""

    def __init__(self, change: Any = None) -> None:
        self.written: asyncio.Queue[bytes] = asyncio.Queue()
        self._change = change

    def deliver(self, stanza: Element) -> None:
        if self._change is not None:
            self._change(stanza)  # what an outbound hook might do
        self.written.put_nowait(stanza.to_bytes())

    async def next(self) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            return await self.written.get()


class _Registry:
    def __init__(self, session: _Session) -> None:
        self.session = session

    def local(self, jid: JID) -> _Session:
        return self.session


class _Server:
    delivery_token: tuple[str, int] | None = None
    cluster_local_only = False

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        return asyncio.ensure_future(coro)


class _Watched(Forwarder):
    """A forwarder that says when a route message (a Done, here) came in."""

    def __init__(self, mesh: Mesh) -> None:
        self.changed = asyncio.Event()
        super().__init__(mesh, cast(Any, _Server()))

    def _receive(self, node: str, message: Any) -> None:
        super()._receive(node, message)
        self.changed.set()

    async def confirmed(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.statistics()["unconfirmed"]:
                self.changed.clear()
                await self.changed.wait()


async def _pair(cluster: LocalCluster, session: _Session) -> tuple[_Watched, Forwarder]:
    a = await cluster.start("a")
    b = await cluster.start("b", seeds=["a"])
    await cluster.fully_meshed()
    sender = _Watched(a)
    receiver = Forwarder(b, cast(Any, _Server()))
    receiver.attach(cast(Any, _Registry(session)))
    return sender, receiver


async def test_a_forwarded_stanza_is_written_as_the_sender_serialized_it(tmp_path: Path) -> None:
    session = _Session()
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        sender, receiver = await _pair(cluster, session)
        stanzas = [
            parse_element(CHAT),
            parse_element(
                "<message to='bob@example.com/r'><body xml:lang='de'>\r\n</body></message>"
            ),
            Element("message", ns.CLIENT, {"{urn:example}a": "1", "to": "bob@example.com/r"}),
        ]
        for stanza in stanzas:
            sender.forward("b", "bob@example.com/r", stanza)
        for stanza in stanzas:
            assert await session.next() == stanza.to_bytes()
        await sender.confirmed()
        assert receiver.statistics()["received"] == 3


async def test_a_stanza_changed_on_the_receiving_node_is_serialized_again(
    tmp_path: Path,
) -> None:
    def change(stanza: Element) -> None:
        stanza.attrs["to"] = "bob@example.com/other"
        stanza.add("delay", ns.DELAY, {"stamp": "2024-01-01T00:00:00Z"})

    session = _Session(change)
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        sender, _ = await _pair(cluster, session)
        sender.forward("b", "bob@example.com/r", parse_element(CHAT))
        expected = parse_element(CHAT)
        change(expected)
        assert await session.next() == expected.to_bytes()
        await sender.confirmed()


async def test_an_unreadable_stanza_is_dropped_and_confirmed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = _Session()
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        sender, receiver = await _pair(cluster, session)
        broken = KnownText(Element("message"), "<message><body>cut short</message>")
        sender.forward("b", "bob@example.com/r", broken)
        sender.forward("b", "bob@example.com/r", parse_element(CHAT))
        assert await session.next() == CHAT.encode()
        await sender.confirmed()
        assert receiver.statistics()["received"] == 2
        assert any("unreadable forwarded stanza" in r.getMessage() for r in caplog.records)


async def test_a_node_without_notices_ignores_them_and_keeps_the_link(tmp_path: Path) -> None:
    # A node of an older version has no subscriber for notices: they are not frames it
    # cannot decode on the route channel, which would cost the link (and reroute everything).
    session = _Session()
    async with LocalCluster(tmp_path, ["a", "b"]) as cluster:
        sender, receiver = await _pair(cluster, session)
        receiver.mesh.unsubscribe(forwarding.NOTICE_CHANNEL)
        sender.notify("b", "offline_stored", "bob@example.com")
        sender.forward("b", "bob@example.com/r", parse_element(CHAT))
        assert await session.next() == CHAT.encode()
        await sender.confirmed()
        assert receiver.mesh.statistics().unrouted == 1
        assert sender.statistics()["rerouted"] == 0
