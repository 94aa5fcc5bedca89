"""A raw XMPP client for tests: exact bytes out, parsed events in.

Real clients (slixmpp) hide the wire; tests of hostile input need the opposite. This client
sends whatever bytes a test gives it and parses what comes back with roost's own stream parser,
so a test can assert on the exact stream error or reply. It can also negotiate the normal way
(STARTTLS, SASL PLAIN, bind) to reach an established stream before misbehaving.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from pathlib import Path

from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StreamError
from roost.xmpp.parser import StreamClose, StreamOpen, XMLStreamParser

Event = StreamOpen | Element | StreamClose

DEFAULT_TIMEOUT = 10.0


def client_context(cert: Path | None) -> ssl.SSLContext:
    """A client TLS context trusting ``cert`` (the server's self-signed certificate)."""
    context = ssl.create_default_context(cafile=str(cert) if cert else None)
    if cert is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = XMLStreamParser(max_stanza=16 * 1024 * 1024)
        self.events: deque[Event] = deque()
        self.eof = False
        self.jid = ""

    @classmethod
    async def connect(
        cls, host: str, port: int, *, tls: ssl.SSLContext | None = None, domain: str = "localhost"
    ) -> RawClient:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=domain if tls else None
        )
        return cls(reader, writer)

    # -- sending -------------------------------------------------------------------------

    async def send(self, data: bytes | str | Element) -> None:
        if isinstance(data, Element):
            data = data.to_bytes()
        elif isinstance(data, str):
            data = data.encode()
        self.writer.write(data)
        await self.writer.drain()

    async def open_stream(self, domain: str = "localhost", *, restart: bool = False) -> Element:
        """Send a stream header and return the server's <stream:features/>."""
        if restart:
            self.parser.reset()
        await self.send(
            f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        header = await self.next_event()
        if not isinstance(header, StreamOpen):
            raise AssertionError(f"expected a stream header, got {header!r}")
        return await self.next_element()

    # -- receiving -----------------------------------------------------------------------

    async def next_event(self, limit: float = DEFAULT_TIMEOUT) -> Event:
        async def read() -> Event:
            while not self.events:
                if self.eof:
                    raise EOFError("the server closed the connection")
                data = await self.reader.read(65536)
                if not data:
                    self.eof = True
                    continue
                try:
                    self.events.extend(self.parser.feed(data))
                except StreamError as exc:
                    raise AssertionError(f"the server sent bad XML: {exc}") from None
            return self.events.popleft()

        # asyncio.timeout, not wait_for: no inner task, so cancelling a reader is immediate.
        async with asyncio.timeout(limit):
            return await read()

    async def next_element(self, limit: float = DEFAULT_TIMEOUT) -> Element:
        event = await self.next_event(limit)
        if not isinstance(event, Element):
            raise AssertionError(f"expected an element, got {event!r}")
        return event

    async def expect(
        self, name: str, xmlns: str = ns.CLIENT, limit: float = DEFAULT_TIMEOUT
    ) -> Element:
        """The next element named ``name``, skipping others (presence, pushes, headers ...)."""
        while True:
            event = await self.next_event(limit)
            if isinstance(event, StreamClose):
                raise AssertionError(f"the stream closed while waiting for <{name}/>")
            if isinstance(event, Element) and event.name == name and event.xmlns == xmlns:
                return event

    async def stream_error(self, limit: float = DEFAULT_TIMEOUT) -> str:
        """Read until a stream error; return its condition."""
        error = await self.expect("error", ns.STREAM, limit)
        condition = next(
            (c.name for c in error.elements() if c.xmlns == ns.STREAMS and c.name != "text"),
            "",
        )
        return condition

    async def closed(self, limit: float = DEFAULT_TIMEOUT) -> bool:
        """Read until the server closes the TCP connection; True when it did."""

        async def drain() -> None:
            while await self.reader.read(65536):
                pass

        try:
            async with asyncio.timeout(limit):
                await drain()
        except (ConnectionError, ssl.SSLError):
            pass
        return True

    # -- negotiation ---------------------------------------------------------------------

    async def starttls(self, context: ssl.SSLContext, domain: str = "localhost") -> None:
        await self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        proceed = await self.next_element()
        if proceed.name != "proceed":
            raise AssertionError(f"STARTTLS refused: {proceed!r}")
        await self.writer.start_tls(context, server_hostname=domain)
        self.parser.reset()

    async def auth_plain(self, user: str, password: str) -> Element:
        """SASL PLAIN; returns <success/> or <failure/>."""
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        return await self.next_element()

    async def bind(self, resource: str | None = None) -> str:
        inner = f"<resource>{resource}</resource>" if resource else ""
        await self.send(
            f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{inner}"
            "</bind></iq>"
        )
        result = await self.expect("iq")
        jid = result.find("bind", ns.BIND)
        if result.attrs.get("type") != "result" or jid is None:
            raise AssertionError(f"bind failed: {result!r}")
        self.jid = jid.find_text("jid", ns.BIND) or ""
        return self.jid

    @classmethod
    async def logged_in(
        cls,
        host: str,
        port: int,
        user: str,
        password: str = "secret",
        *,
        cert: Path | None = None,
        resource: str | None = None,
        domain: str = "localhost",
    ) -> RawClient:
        """Connect, STARTTLS, authenticate with PLAIN and bind: an established stream."""
        client = await cls.connect(host, port, domain=domain)
        await client.open_stream(domain)
        await client.starttls(client_context(cert), domain)
        await client.open_stream(domain)
        outcome = await client.auth_plain(user.split("@", 1)[0], password)
        if outcome.name != "success":
            raise AssertionError(f"authentication failed: {outcome!r}")
        await client.open_stream(domain, restart=True)
        await client.bind(resource)
        return client

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
