"""Time-based rules of the listener, driven with a virtual clock: the sweep is called with a
``now`` in the future instead of waiting for it."""

from __future__ import annotations

import asyncio

import pytest

from roost.c2s.session import C2SSession
from roost.testing import RunningServer
from roost.testing.rawclient import RawClient


def _session(server: RunningServer, jid: str) -> C2SSession:
    route = server.server.sessions.routes(jid)[0]
    assert isinstance(route, C2SSession)
    return route


def _sweep_at(server: RunningServer, seconds_from_now: float) -> None:
    now = asyncio.get_running_loop().time() + seconds_from_now
    for listener in server.server.listeners:
        listener.sweep(now)


async def _logged_in(server: RunningServer, user: str) -> RawClient:
    await server.create_user(user)
    return await RawClient.logged_in(server.host, server.port, user, cert=server.cert)


async def test_an_idle_stream_hibernates_and_wakes_up_transparently(
    roost_server: RunningServer,
) -> None:
    alice = await _logged_in(roost_server, "alice")
    bob = await _logged_in(roost_server, "bob")
    await bob.send("<presence/>")
    await bob.expect("presence")  # bob is available once his own presence comes back
    _sweep_at(roost_server, roost_server.server.config.hibernate_after + 1)
    assert _session(roost_server, "alice@localhost").hibernating
    # A payload with a namespace of its own, after waking.
    await alice.send(
        "<message to='bob@localhost' type='chat'><body>after a nap</body>"
        "<x xmlns='urn:example:x'><y a='1'/></x></message>"
    )
    message = await bob.expect("message")
    assert message.find_text("body") == "after a nap"
    assert message.find("x", "urn:example:x") is not None
    # Woken after a long sleep for one stanza, the stream dozes off again at once...
    assert _session(roost_server, "alice@localhost").hibernating
    # ...but a second wake-up soon after means it is busy: it stays awake.
    await alice.send("<message to='bob@localhost' type='chat'><body>again</body></message>")
    message = await bob.expect("message")
    assert message.find_text("body") == "again"
    assert not _session(roost_server, "alice@localhost").hibernating


async def test_a_stream_in_the_middle_of_a_stanza_does_not_hibernate(
    roost_server: RunningServer,
) -> None:
    alice = await _logged_in(roost_server, "alice")
    bob = await _logged_in(roost_server, "bob")
    await bob.send("<presence/>")
    await bob.expect("presence")
    # One write: when bob has the first message, the server has read the half stanza too.
    await alice.send(
        "<message to='bob@localhost' type='chat'><body>first</body></message>"
        "<message to='bob@localhost' type='chat'><body>half"
    )
    first = await bob.expect("message")
    assert first.find_text("body") == "first"
    _sweep_at(roost_server, roost_server.server.config.hibernate_after + 1)
    assert not _session(roost_server, "alice@localhost").hibernating
    await alice.send(" done</body></message>")
    message = await bob.expect("message")
    assert message.find_text("body") == "half done"


async def test_a_silent_connection_gets_a_whitespace_keepalive(
    roost_server: RunningServer,
) -> None:
    alice = await _logged_in(roost_server, "alice")
    _sweep_at(roost_server, roost_server.server.config.keepalive_interval + 1)
    data = await asyncio.wait_for(alice.reader.read(100), 10)
    assert data.strip() == b""
    assert data


@pytest.mark.roost_config(idle_timeout=60)
async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    roost_server: RunningServer,
) -> None:
    alice = await _logged_in(roost_server, "alice")
    _sweep_at(roost_server, 30)
    assert len(roost_server.server.sessions) == 1
    _sweep_at(roost_server, 61)
    assert await alice.stream_error() == "connection-timeout"
    assert await alice.closed()


async def test_unauthenticated_connection_is_closed_at_the_auth_timeout(
    roost_server: RunningServer,
) -> None:
    loiterer = await RawClient.connect(roost_server.host, roost_server.port)
    await loiterer.open_stream()
    _sweep_at(roost_server, roost_server.server.config.auth_timeout + 1)
    assert await loiterer.stream_error() == "connection-timeout"
