"""End-to-end fixtures: slixmpp, a real third-party XMPP client, against a real roost server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import slixmpp

from roost.core.hooks import Stop
from roost.core.server import Server
from roost.testing import RunningServer
from roost.xmpp.element import Element

TIMEOUT = 10.0


def held_in_hook(
    server: Server, hook: str, matches: Callable[[Element], bool]
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the fold hook ``hook`` hold the stanzas that match: they count as being handled
    until the second event is set, and then go no further. Returns (one was held, release)."""
    held, release = asyncio.Event(), asyncio.Event()

    def hold(stanza: Element, _context: Any) -> Any:
        if not matches(stanza):
            return stanza
        held.set()
        return Stop(release.wait())

    server.hooks.add(hook, hold, priority=1)
    return held, release


class Client(slixmpp.ClientXMPP):  # type: ignore[misc]
    """A slixmpp client with queues of what it received, for assertions."""

    def __init__(self, jid: str, password: str, **kwargs: Any) -> None:
        super().__init__(jid, password, **kwargs)
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.subscriptions: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.failed = asyncio.Event()
        self.ended = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.started.set())
        self.add_event_handler("failed_auth", lambda _: self.failed.set())
        self.add_event_handler("disconnected", lambda _: self.ended.set())
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence_available", self.presences.put_nowait)
        self.add_event_handler("presence_unavailable", self.presences.put_nowait)
        self.add_event_handler("presence_subscribe", self.subscriptions.put_nowait)
        self.add_event_handler("presence_subscribed", self.subscriptions.put_nowait)
        self._roster_changed = asyncio.Event()
        self.add_event_handler("roster_update", lambda _: self._roster_changed.set())

    async def roster_until(self, condition: Callable[[], bool]) -> None:
        """Wait (for roster pushes) until ``condition()`` holds."""

        async def wait() -> None:
            while not condition():
                self._roster_changed.clear()
                await self._roster_changed.wait()

        await asyncio.wait_for(wait(), TIMEOUT)

    async def next_message(self) -> Any:
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    async def next_presence(self, sender: str | None = None) -> Any:
        while True:
            presence = await asyncio.wait_for(self.presences.get(), TIMEOUT)
            if sender is None or presence["from"].bare == sender:
                return presence


Connect = Callable[..., Coroutine[Any, Any, Client]]


@pytest.fixture
async def connect(roost_server: RunningServer) -> AsyncIterator[Connect]:
    """Log a slixmpp client in: ``await connect("alice@localhost/phone", mechanism=...)``."""
    clients: list[Client] = []

    async def _connect(
        jid: str,
        password: str = "secret",
        *,
        mechanism: str | None = None,
        direct_tls: bool = False,
        expect_failure: bool = False,
        plugins: tuple[str, ...] = ("xep_0030", "xep_0199", "xep_0092", "xep_0054"),
    ) -> Client:
        client = Client(jid, password, sasl_mech=mechanism)
        for plugin in plugins:
            client.register_plugin(plugin)
        client.ca_certs = roost_server.cert
        if direct_tls:
            client.enable_direct_tls = True
            client.enable_starttls = False
            port = roost_server.tls_port
        else:
            port = roost_server.port
        clients.append(client)
        client.connect(roost_server.host, port)
        if expect_failure:
            await asyncio.wait_for(client.failed.wait(), TIMEOUT)
            return client
        await asyncio.wait_for(client.started.wait(), TIMEOUT)
        return client

    yield _connect
    for client in clients:
        if client.transport is not None:
            client.disconnect(wait=False)
    for client in clients:
        if client.transport is not None:
            try:
                await asyncio.wait_for(client.ended.wait(), TIMEOUT)
            except TimeoutError:
                client.abort()
