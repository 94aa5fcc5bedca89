"""A stream-management client for tests (XEP-0198): it counts, acknowledges and resumes.

Built on :class:`~roost.testing.rawclient.RawClient`. It does what a mobile client does: enables
stream management with resumption, answers the server's ``<r/>`` with its handled count, keeps
the stanzas it sent until the server acknowledges them, and after a lost connection either
resumes (resending what the server did not acknowledge) or starts a new session.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from pathlib import Path

from roost.testing.rawclient import RawClient, client_context
from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.parser import StreamClose

MODULO = 2**32


class SMClient:
    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str = "secret",
        *,
        cert: Path | None = None,
        resource: str = "sm",
        domain: str = "localhost",
    ) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.cert, self.resource, self.domain = cert, resource, domain
        self.raw: RawClient | None = None
        self.sm_id = ""
        self.handled = 0  # stanzas received from the server (our h)
        self.server_acked = 0  # our stanzas the server confirmed
        self.unacked: deque[bytes] = deque()  # sent, not yet confirmed by the server
        self.on_stanza: Callable[[Element], None] = lambda stanza: None
        self._reader: asyncio.Task[None] | None = None
        self.resumed = 0
        self.fresh_sessions = 0
        self._confirmed = asyncio.Event()

    async def _negotiate(self) -> RawClient:
        raw = await RawClient.connect(self.host, self.port, domain=self.domain)
        await raw.open_stream(self.domain)
        await raw.starttls(client_context(self.cert), self.domain)
        await raw.open_stream(self.domain)
        outcome = await raw.auth_plain(self.user.split("@", 1)[0], self.password)
        if outcome.name != "success":
            raise AssertionError(f"authentication failed: {outcome!r}")
        await raw.open_stream(self.domain, restart=True)
        return raw

    async def start(self) -> None:
        """A new session: bind, enable stream management with resumption."""
        raw = await self._negotiate()
        await raw.bind(self.resource)
        await raw.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        enabled = await raw.expect("enabled", ns.SM)
        self.sm_id = enabled.attrs["id"]
        self.handled = 0
        self.server_acked = 0
        self.raw = raw
        self.fresh_sessions += 1
        # Whatever the old session never confirmed is ours to send again.
        pending = list(self.unacked)
        self.unacked.clear()
        self._reader = asyncio.get_running_loop().create_task(self._read(raw))
        for data in pending:
            await self.send(data)

    async def resume(self) -> bool:
        """Resume the previous session; False (and a fresh one) when the server refuses."""
        raw = await self._negotiate()
        await raw.send(f"<resume xmlns='urn:xmpp:sm:3' h='{self.handled}' previd='{self.sm_id}'/>")
        answer = await raw.next_element()
        if answer.name == "failed":
            h = answer.attrs.get("h")
            if h is not None:
                self._confirm(int(h))
            await raw.close()
            await self.start()
            return False
        assert answer.name == "resumed", answer
        self._confirm(int(answer.attrs["h"]))
        self.raw = raw
        self.resumed += 1
        pending = list(self.unacked)
        self.unacked.clear()
        self._reader = asyncio.get_running_loop().create_task(self._read(raw))
        for data in pending:
            await self.send(data)
        return True

    def _confirm(self, h: int) -> None:
        for _ in range((h - self.server_acked) % MODULO):
            self.unacked.popleft()
        self.server_acked = h
        self._confirmed.set()

    async def all_acknowledged(self, limit: float = 10.0) -> None:
        """Ask the server for an ack until everything sent is confirmed."""
        async with asyncio.timeout(limit):
            while self.unacked:
                self._confirmed.clear()
                await self.request_ack()
                await self._confirmed.wait()

    async def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.unacked.append(data)
        assert self.raw is not None
        try:
            await self.raw.send(data)
        except (ConnectionError, RuntimeError):
            pass  # it stays unacknowledged and is sent again after resumption

    async def request_ack(self) -> None:
        assert self.raw is not None
        await self.raw.send("<r xmlns='urn:xmpp:sm:3'/>")

    async def _read(self, raw: RawClient) -> None:
        while True:
            try:
                element = await raw.next_element(limit=3600)
            except (EOFError, ConnectionError, AssertionError, OSError):
                return
            if element.xmlns == ns.SM:
                if element.name == "r":
                    await raw.send(f"<a xmlns='urn:xmpp:sm:3' h='{self.handled}'/>")
                elif element.name == "a":
                    self._confirm(int(element.attrs["h"]))
                continue
            if element.name in ("message", "presence", "iq"):
                self.handled = (self.handled + 1) % MODULO
                self.on_stanza(element)

    def abort(self) -> None:
        """Cut the TCP connection without a closing tag, as a phone losing coverage does."""
        if self.raw is not None:
            self.raw.writer.transport.abort()
        if self._reader is not None:
            self._reader.cancel()

    async def _stop_reader(self) -> None:
        reader = self._reader
        self._reader = None
        if reader is not None:
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass

    async def close(self) -> None:
        """Close the stream properly: our closing tag, then wait for the server's."""
        await self._stop_reader()
        raw = self.raw
        if raw is None:
            return
        try:
            await raw.send("</stream:stream>")
            while not isinstance(await raw.next_event(), StreamClose):
                pass
        except (ConnectionError, RuntimeError, EOFError):
            pass
        await raw.close()
