"""XMPP over WebSocket (RFC 7395): a real WebSocket client (the ``websockets`` library's) speaking
the framing to a running server, next to TCP clients on the same server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from xml.etree import ElementTree

import pytest
from scramp import ScramClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus

from roost.testing import RunningServer
from roost.testing.rawclient import RawClient, client_context
from roost.testing.smclient import SMClient
from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.jid import parse_jid
from roost.xmpp.parser import XMLStreamParser

TIMEOUT = 10.0
OPEN = f"<open xmlns='{ns.FRAMING}' to='localhost' version='1.0'/>"
CLOSE = f"<close xmlns='{ns.FRAMING}'/>"


class WSClient:
    """One RFC 7395 client stream: every message it reads must be one self-contained element."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def next(self) -> Element:
        message = await self.ws.recv()
        assert isinstance(message, str), "XMPP travels in text messages"
        # A parser whose root declares nothing: undeclared prefixes or namespaces would fail.
        parser = XMLStreamParser(stream_xmlns="", max_stanza=1 << 24)
        parser.feed(b"<root>")
        events = parser.feed(message.encode())
        assert len(events) == 1, message
        element = events[0]
        assert isinstance(element, Element), message
        return element

    async def expect(self, name: str, xmlns: str = ns.CLIENT) -> Element:
        while True:
            element = await self.next()
            if (element.name, element.xmlns) == (name, xmlns):
                return element

    async def open(self) -> Element:
        """Send <open/>; return the <stream:features/> that follow the server's <open/>."""
        await self.send(OPEN)
        opened = await self.next()
        assert (opened.name, opened.xmlns) == ("open", ns.FRAMING), opened
        assert opened.attrs["from"] == "localhost"
        assert opened.attrs["id"]
        features = await self.next()
        assert (features.name, features.xmlns) == ("features", ns.STREAM), features
        return features

    async def stream_error(self) -> str:
        error = await self.expect("error", ns.STREAM)
        condition = next(c.name for c in error.elements() if c.name != "text")
        closing = await self.next()
        assert (closing.name, closing.xmlns) == ("close", ns.FRAMING)  # RFC 7395 §3.5
        return condition

    async def scram(self, user: str, password: str = "secret") -> None:
        scram = ScramClient(["SCRAM-SHA-256"], user, password)
        first = base64.b64encode(scram.get_client_first().encode()).decode()
        await self.send(f"<auth xmlns='{ns.SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>")
        challenge = await self.expect("challenge", ns.SASL)
        scram.set_server_first(base64.b64decode(challenge.text).decode())
        final = base64.b64encode(scram.get_client_final().encode()).decode()
        await self.send(f"<response xmlns='{ns.SASL}'>{final}</response>")
        success = await self.expect("success", ns.SASL)
        scram.set_server_final(base64.b64decode(success.text).decode())

    async def bind(self, resource: str) -> str:
        await self.send(
            f"<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='{ns.BIND}'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        result = await self.expect("iq")
        jid = result.find("bind", ns.BIND)
        assert jid is not None, result
        return jid.find_text("jid", ns.BIND) or ""

    async def login(self, user: str, resource: str = "web") -> str:
        await self.open()
        await self.scram(user)
        await self.open()  # RFC 7395 §3.7: the restart is a new <open/>
        return await self.bind(resource)


@asynccontextmanager
async def ws_client(server: RunningServer, **kwargs: Any) -> AsyncIterator[WSClient]:
    kwargs.setdefault("subprotocols", ["xmpp"])
    async with connect(
        server.websocket_url,
        ssl=client_context(server.cert),
        server_hostname="localhost",
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        **kwargs,
    ) as ws:
        yield WSClient(ws)


async def test_handshake_needs_the_xmpp_subprotocol(roost_server: RunningServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(roost_server, subprotocols=None):
            pass
    assert refused.value.response.status_code == 400  # RFC 7395 §3.1
    with pytest.raises(InvalidStatus) as elsewhere:
        async with connect(
            roost_server.websocket_url.replace("/xmpp-websocket", "/chat"),
            ssl=client_context(roost_server.cert),
            server_hostname="localhost",
            subprotocols=["xmpp"],  # type: ignore[list-item]
        ):
            pass
    assert elsewhere.value.response.status_code == 404
    async with ws_client(roost_server) as client:
        assert client.ws.subprotocol == "xmpp"


async def test_a_browser_client_logs_in_and_chats_with_a_tcp_client(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    bob = await RawClient.logged_in(
        roost_server.host, roost_server.port, "bob", cert=roost_server.cert, resource="tcp"
    )
    async with ws_client(roost_server) as alice:
        features = await alice.open()
        # RFC 7395 §3.9: TLS is the WebSocket's (wss); never offered inside the stream.
        assert features.find("starttls", ns.TLS) is None
        mechanisms = features.find("mechanisms", ns.SASL)
        assert mechanisms is not None
        assert "SCRAM-SHA-256" in [m.text for m in mechanisms.elements()]
        await alice.scram("alice")
        features = await alice.open()
        assert features.find("bind", ns.BIND) is not None
        assert features.find("sm", ns.SM) is not None
        jid = await alice.bind("web")
        assert jid == "alice@localhost/web"

        await alice.send(
            "<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat' id='m1'>"
            "<body>hello from a browser</body></message>"
        )
        got = await bob.expect("message")
        assert got.attrs["from"] == jid
        assert got.find_text("body") == "hello from a browser"

        await bob.send(
            f"<message to='{jid}' type='chat' id='m2'><body>hello from TCP</body></message>"
        )
        reply = await alice.expect("message")
        assert reply.attrs["from"] == "bob@localhost/tcp"
        assert reply.find_text("body", ns.CLIENT) == "hello from TCP"

        # RFC 7395 §3.6: <close/> is answered with <close/>, then the WebSocket closes.
        await alice.send(CLOSE)
        closing = await alice.expect("close", ns.FRAMING)
        assert closing.attrs == {}
        with pytest.raises(ConnectionClosedOK):
            await alice.ws.recv()
    await bob.close()


async def test_malformed_xml_is_a_stream_error_then_close(roost_server: RunningServer) -> None:
    async with ws_client(roost_server) as client:
        await client.open()
        await client.send("<message xmlns='jabber:client'><body>unfinished</body>")
        assert await client.stream_error() == "not-well-formed"
        with pytest.raises(ConnectionClosed):
            await client.ws.recv()


async def test_two_elements_in_one_message_are_refused(roost_server: RunningServer) -> None:
    async with ws_client(roost_server) as client:
        await client.open()
        await client.send(f"<r xmlns='{ns.SM}'/><r xmlns='{ns.SM}'/>")
        assert await client.stream_error() == "not-well-formed"


@pytest.mark.roost_config(max_stanza_size=4096)
async def test_a_stanza_over_the_size_limit_is_a_policy_violation(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    async with ws_client(roost_server) as client:
        await client.login("alice")
        body = "x" * 5000
        await client.send(
            f"<message xmlns='jabber:client' to='bob@localhost'><body>{body}</body></message>"
        )
        assert await client.stream_error() == "policy-violation"
    # Far beyond the limit, the WebSocket layer refuses the message unread (RFC 6455 §7.4.1).
    async with ws_client(roost_server) as client:
        await client.open()
        await client.send("<message xmlns='jabber:client'>" + "x" * 20000 + "</message>")
        with pytest.raises(ConnectionClosed) as closed:
            await client.ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_the_wrong_namespace_is_refused(roost_server: RunningServer) -> None:
    async with ws_client(roost_server) as client:
        # A TCP stream header is not an RFC 7395 <open/>.
        await client.send(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='localhost' version='1.0'/>"
        )
        assert await client.stream_error() == "invalid-namespace"
    await roost_server.create_user("alice")
    async with ws_client(roost_server) as client:
        await client.login("alice")
        # Stanzas must declare jabber:client: nothing is inherited from <open/>.
        await client.send("<message to='alice@localhost'><body>hi</body></message>")
        assert await client.stream_error() == "invalid-namespace"


async def test_starttls_is_refused_over_websocket(roost_server: RunningServer) -> None:
    async with ws_client(roost_server) as client:
        await client.open()
        await client.send(f"<starttls xmlns='{ns.TLS}'/>")
        assert await client.stream_error() == "policy-violation"


async def test_pings_are_answered(roost_server: RunningServer) -> None:
    async with ws_client(roost_server) as client:
        await client.open()
        pong = await client.ws.ping(b"roost")
        await pong


async def test_a_client_that_vanishes_without_close_leaves_no_session(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    bob = await RawClient.logged_in(
        roost_server.host, roost_server.port, "bob", cert=roost_server.cert
    )
    closed: asyncio.Queue[str] = asyncio.Queue()
    roost_server.server.hooks.add("c2s.closed", lambda session: closed.put_nowait(str(session.jid)))
    async with ws_client(roost_server) as alice:
        jid = await alice.login("alice")
        alice.ws.transport.abort()  # no <close/>, no Close frame: the TCP connection just ends
    assert await asyncio.wait_for(closed.get(), TIMEOUT) == jid
    assert roost_server.server.sessions.get(parse_jid(jid)) is None
    # An IQ to a resource that is gone is answered by the server (RFC 6121 §8.5.3.2.3).
    await bob.send(f"<iq to='{jid}' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    error = await bob.expect("iq")
    assert error.attrs["type"] == "error"
    assert error.attrs["from"] == jid
    await bob.close()


async def _resumed(client: WSClient, user: str, previd: str) -> None:
    """Authenticate ``client`` as ``user`` and resume the session ``previd`` having handled
    nothing."""
    await client.open()
    await client.scram(user)
    await client.open()
    await client.send(f"<resume xmlns='{ns.SM}' previd='{previd}' h='0'/>")
    resumed = await client.expect("resumed", ns.SM)
    assert resumed.attrs["previd"] == previd


async def test_stream_management_resumes_over_websocket(roost_server: RunningServer) -> None:
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    bob = await RawClient.logged_in(
        roost_server.host, roost_server.port, "bob", cert=roost_server.cert, resource="tcp"
    )
    async with ws_client(roost_server) as first:
        jid = await first.login("alice")
        await first.send(f"<enable xmlns='{ns.SM}' resume='true'/>")
        enabled = await first.expect("enabled", ns.SM)
        previd = enabled.attrs["id"]
        await bob.send(f"<message to='{jid}' type='chat' id='u1'><body>unacked</body></message>")
        await first.expect("message")
        first.ws.transport.abort()  # gone without acknowledging the message
    async with ws_client(roost_server) as second:
        await _resumed(second, "alice", previd)
        again = await second.expect("message")
        assert again.find_text("body", ns.CLIENT) == "unacked"
        await second.send(
            "<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat' id='u2'>"
            "<body>back</body></message>"
        )
        got = await bob.expect("message")
        assert got.attrs["from"] == jid
        assert got.find_text("body") == "back"
    await bob.close()


async def test_a_tcp_session_resumes_over_websocket(roost_server: RunningServer) -> None:
    # What was written to the TCP stream (no xmlns on stanzas) is written again in the
    # WebSocket's framing (every stanza declares jabber:client, RFC 7395 §3.3.3).
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    bob = await RawClient.logged_in(
        roost_server.host, roost_server.port, "bob", cert=roost_server.cert, resource="tcp"
    )
    alice = SMClient(roost_server.host, roost_server.port, "alice", cert=roost_server.cert)
    received: list[Element] = []
    alice.on_stanza = received.append
    await alice.start()
    await bob.send(
        "<message to='alice@localhost/sm' type='chat' id='t1'><body>over tcp</body></message>"
    )
    await bob.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    await bob.expect("iq")
    alice.abort()  # gone without acknowledging the message
    async with ws_client(roost_server) as ws:
        await _resumed(ws, "alice", alice.sm_id)
        again = await ws.expect("message")
        assert again.xmlns == ns.CLIENT
        assert again.attrs["id"] == "t1"
        assert again.find_text("body", ns.CLIENT) == "over tcp"
    await bob.close()


# -- discovery (XEP-0156) -------------------------------------------------------------------------


async def http_get(server: RunningServer, path: str, host: str) -> tuple[int, dict[str, str], str]:
    """GET ``path`` from the WebSocket port over TLS, with ``host`` as the Host header."""
    reader, writer = await asyncio.open_connection(
        server.host,
        server.websocket_port,
        ssl=client_context(server.cert),
        server_hostname="localhost",
    )
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *lines = head.decode().split("\r\n")
        headers = {
            k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)
        }
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT)
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, body.decode()


async def test_host_meta_names_the_websocket_endpoint_and_it_works(
    roost_server: RunningServer,
) -> None:
    host = f"localhost:{roost_server.websocket_port}"
    status, headers, body = await http_get(roost_server, "/.well-known/host-meta", host)
    assert status == 200
    assert headers["content-type"].startswith("application/xrd+xml")
    assert headers["access-control-allow-origin"] == "*"
    xrd = ElementTree.fromstring(body)
    assert xrd.tag == "{http://docs.oasis-open.org/ns/xri/xrd-1.0}XRD"
    (link,) = xrd
    assert link.get("rel") == "urn:xmpp:alt-connections:websocket"
    href = link.get("href")
    assert href == f"wss://{host}/xmpp-websocket"

    status, headers, body = await http_get(roost_server, "/.well-known/host-meta.json", host)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert headers["access-control-allow-origin"] == "*"
    assert json.loads(body) == {
        "links": [{"rel": "urn:xmpp:alt-connections:websocket", "href": href}]
    }

    # A client that only learned the endpoint from discovery gets a stream there.
    async with connect(
        href,
        ssl=client_context(roost_server.cert),
        subprotocols=["xmpp"],  # type: ignore[list-item]
    ) as ws:
        features = await WSClient(ws).open()
        assert features.find("mechanisms", ns.SASL) is not None


@pytest.mark.parametrize("host", ["", "evil.example/'><x", "a b", 'localhost:5280"x'])
async def test_host_meta_refuses_a_host_header_it_would_not_echo(
    roost_server: RunningServer, host: str
) -> None:
    status, _headers, body = await http_get(roost_server, "/.well-known/host-meta", host)
    assert status == 400
    assert "<x" not in body  # nothing of the header is echoed
