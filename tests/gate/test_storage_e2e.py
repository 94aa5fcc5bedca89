"""A failing store, real clients: fast errors, no stanza acknowledged and then lost, recovery.

The store is the real SQLite file of a running server. It is stalled the way another process
stalls it, by holding its write lock from a second connection, or made to fail by closing it
under the server. Clients are real sockets: an :class:`SMClient` (stream management, acks)
that sends, raw clients that receive. The gate's clock is virtual, so its open period passes
when the test says so; only the storage call timeout runs on real time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from roost.gate import Gate
from roost.gate.storage import STORAGE_GATE, GatedStorage
from roost.gate.testing import VirtualClock
from roost.testing import RunningServer
from roost.testing.rawclient import RawClient, client_context
from roost.testing.smclient import SMClient
from roost.xmpp import ns
from roost.xmpp.element import Element

STALL = pytest.mark.roost_config(
    gate_consecutive_failures=2,
    gate_call_timeout=0.25,
    gate_open_for=5.0,
    gate_failure_rate=0.0,
    gate_slow_call_rate=0.0,
)


def virtual_clock(server: RunningServer) -> tuple[Gate, VirtualClock]:
    gate = server.server.gates.gate(STORAGE_GATE)
    clock = VirtualClock(time.monotonic())
    gate.clock = clock
    return gate, clock


@contextmanager
def write_locked(server: RunningServer) -> Iterator[None]:
    """Hold the database's write lock, as another process writing to it would."""
    other = sqlite3.connect(server.data_dir / "roost.db", isolation_level=None, timeout=10)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def stanza_error(stanza: Element) -> tuple[str, str]:
    """(type, condition) of an error stanza."""
    error = stanza.find("error")
    assert error is not None, stanza
    condition = next(c.name for c in error.elements() if c.xmlns == ns.STANZAS)
    return error.attrs["type"], condition


class Sender:
    """An SM client that keeps the errors it gets back, by the id of what it sent."""

    def __init__(self, server: RunningServer, user: str) -> None:
        self.client = SMClient(server.host, server.port, user, cert=server.cert)
        self.client.on_stanza = self._received
        self.errors: dict[str, tuple[str, str]] = {}  # id -> (error type, condition)

    def _received(self, stanza: Element) -> None:
        if stanza.attrs.get("type") == "error":
            self.errors[stanza.attrs.get("id", "")] = stanza_error(stanza)

    async def message(self, to: str, body: str) -> None:
        await self.client.send(
            f"<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"
        )


async def online(server: RunningServer, user: str) -> RawClient:
    client = await RawClient.logged_in(server.host, server.port, user, cert=server.cert)
    await client.send("<presence/>")
    await client.expect("presence")
    return client


async def bodies(client: RawClient, count: int) -> list[str]:
    found: list[str] = []
    while len(found) < count:
        message = await client.expect("message")
        body = message.find_text("body")
        if body is not None:
            found.append(body)
    return found


@STALL
async def test_a_stalled_store_opens_its_gate_clients_get_fast_errors_and_it_heals(
    roost_server: RunningServer,
) -> None:
    gate, clock = virtual_clock(roost_server)
    for user in ("alice", "bob", "carol"):
        await roost_server.create_user(user)
    alice = Sender(roost_server, "alice")
    await alice.client.start()
    carol = await online(roost_server, "carol")
    await alice.message("bob@localhost", "m0")
    await alice.client.all_acknowledged()

    with write_locked(roost_server):
        for i in range(1, 5):
            await alice.message("bob@localhost", f"m{i}")
        await alice.client.all_acknowledged()  # every one handled: answered with an error
        assert sorted(alice.errors) == ["m1", "m2", "m3", "m4"]
        assert set(alice.errors.values()) == {("wait", "resource-constraint")}
        assert gate.state("roost.db") == "open"
        [row] = gate.statistics()
        assert row["last_trip"]["policy"] == "consecutive_failures"
        assert row["last_trip"]["error"] == "TimeoutError"
        assert row["rejected"] >= 1  # the later ones never reached the store

        await alice.message(carol.jid, "live")
        assert await bodies(carol, 1) == ["live"]  # routing to online users goes on

    clock.advance(5.0)  # the open period is over: trial calls next
    await alice.message("bob@localhost", "m5")
    await alice.client.all_acknowledged()
    assert "m5" not in alice.errors
    assert gate.state("roost.db") == "closed"

    bob = await RawClient.logged_in(
        roost_server.host, roost_server.port, "bob", cert=roost_server.cert
    )
    await bob.send("<presence/>")
    await bob.send("<iq type='get' id='done'><ping xmlns='urn:xmpp:ping'/></iq>")
    received = []
    while True:
        stanza = await bob.next_element()
        if stanza.name == "iq" and stanza.attrs.get("id") == "done":
            break
        if stanza.name == "message":
            received.append(stanza.find_text("body"))
    assert "m0" in received
    assert "m5" in received
    for i in range(6):  # nothing acknowledged was lost: delivered, or its sender was told
        assert f"m{i}" in received or f"m{i}" in alice.errors
    await alice.client.close()


async def test_a_failing_store_answers_with_wait_errors_and_keeps_streams_open(
    roost_server: RunningServer,
) -> None:
    gate, _ = virtual_clock(roost_server)
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    alice = await RawClient.logged_in(
        roost_server.host, roost_server.port, "alice", cert=roost_server.cert
    )
    storage = roost_server.server.storage
    assert isinstance(storage, GatedStorage)
    await storage.inner.close()  # every call now fails with a StorageError

    vcard = "<iq type='get' id='v'><vCard xmlns='vcard-temp'/></iq>"
    for _ in range(5):  # the store's own failures, until the gate opens
        await alice.send(vcard)
        assert stanza_error(await alice.expect("iq")) == ("wait", "internal-server-error")
    assert gate.state("roost.db") == "open"
    await alice.send(vcard)
    assert stanza_error(await alice.expect("iq")) == ("wait", "resource-constraint")

    # A subscription request needs the roster: an error for it, and the stream goes on.
    await alice.send("<presence to='bob@localhost' type='subscribe' id='s1'/>")
    assert stanza_error(await alice.expect("presence")) == ("wait", "resource-constraint")
    await alice.send("<iq type='get' id='ping' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    pong = await alice.expect("iq")
    assert (pong.attrs["id"], pong.attrs["type"]) == ("ping", "result")


async def test_logins_fail_temporarily_while_the_store_is_gated(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    roost_server.server.gates.gate(STORAGE_GATE).force(None, "open", 60.0)
    client = await RawClient.connect(roost_server.host, roost_server.port)
    await client.open_stream()
    await client.starttls(client_context(roost_server.cert))
    await client.open_stream()
    for _ in range(5):  # more than the failed attempts allowed: these are not the client's fault
        failure = await client.auth_plain("alice", "secret")
        assert failure.name == "failure"
        assert failure.find("temporary-auth-failure", ns.SASL) is not None
    roost_server.server.gates.gate(STORAGE_GATE).force(None, "auto")
    success = await client.auth_plain("alice", "secret")
    assert success.name == "success"
