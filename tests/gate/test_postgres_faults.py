"""PostgreSQL fails behind a proxy under chat: the storage gate opens, nothing acked is lost.

Real parts throughout: a roost server whose store is a scratch database on a real PostgreSQL
server, reached through a :class:`~roost.testing.faultproxy.FaultProxy` that the test stalls
(bytes held both ways, connections left open: a hung database) or resets (every connection
torn down: a database that restarts); real clients on real sockets. Senders are stream
management clients, so the server's acknowledgements (``<a h>``) are counted; some
recipients are online (routing in memory), some offline (their messages must be stored).

The gate's clock is virtual, so its open period passes when the test says so; only the
storage call timeout runs on real time (half a second, the one real wait, paid once per
stall). At the end every message a sender sent is accounted for: acknowledged and then found
by its recipient (live, or from the offline store at login), or answered with an error the
sender got. A stored message may also have been answered with an error (a write the gate
gave up on can still reach the database once the link heals): delivery is at least once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from roost.gate.storage import STORAGE_GATE
from roost.gate.testing import VirtualClock
from roost.storage.base import ArchiveQuery
from roost.storage.postgres import PostgresStorage
from roost.testing import RunningServer, running_server
from roost.testing.faultproxy import FaultProxy
from roost.testing.postgres import (
    PostgresUnavailable,
    create_database,
    drop_database,
    server_url,
    unavailable,
)
from roost.testing.rawclient import RawClient, client_context
from roost.testing.smclient import SMClient
from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.parser import parse_element
from tests.admin.conftest import run_cli

pytestmark = pytest.mark.postgres

OPEN_FOR = 5.0  # on the gate's virtual clock
GATES: dict[str, Any] = {
    "gate_consecutive_failures": 2,
    "gate_failure_rate": 0.5,
    "gate_minimum_calls": 4,
    "gate_window": 10.0,
    "gate_slow_call_rate": 0.0,
    "gate_call_timeout": 0.5,
    "gate_open_for": OPEN_FOR,
    "gate_half_open_calls": 1,
}


@dataclass
class Rig:
    """A server on a proxied PostgreSQL database, with the gate on a virtual clock."""

    server: RunningServer
    proxy: FaultProxy
    database: str  # the storage gate's partition
    clock: VirtualClock

    def state(self) -> str:
        return self.server.server.gates.gate(STORAGE_GATE).state(self.database)


def through(url: str, proxy: FaultProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{proxy.host}:{proxy.port}" if user else f"{proxy.host}:{proxy.port}"
    return parts._replace(netloc=netloc).geturl()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    try:
        url = await create_database()
    except PostgresUnavailable as error:
        unavailable(error)
    target = urlsplit(url)
    proxy = FaultProxy((target.hostname or "127.0.0.1", target.port or 5432))
    try:
        await proxy.start()
        async with running_server(
            tmp_path / "roost", storage_url=through(url, proxy), **GATES
        ) as server:
            gate = server.server.gates.gate(STORAGE_GATE)
            clock = VirtualClock(time.monotonic())
            gate.clock = clock
            try:
                yield Rig(server, proxy, target.path.lstrip("/"), clock)
            finally:
                proxy.heal()  # so that the server's store closes at once, whatever happened
    finally:
        await proxy.close()
        await drop_database(url, server_url())


class Sender:
    """An SM client that keeps what it sent and the errors it got back, by stanza id."""

    def __init__(self, server: RunningServer, user: str) -> None:
        self.user = user
        self.client = SMClient(server.host, server.port, user, cert=server.cert)
        self.client.on_stanza = self._received
        self.sent: dict[str, str] = {}  # id -> recipient's bare JID
        self.errors: dict[str, tuple[str, str]] = {}  # id -> (error type, condition)

    def _received(self, stanza: Element) -> None:
        if stanza.name == "message" and stanza.attrs.get("type") == "error":
            self.errors[stanza.attrs.get("id", "")] = stanza_error(stanza)

    async def message(self, to: str, tag: str) -> str:
        body = f"{self.user}-{tag}-{len(self.sent)}"
        self.sent[body] = to
        await self.client.send(
            f"<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"
        )
        return body

    def errors_since(self, bodies: list[str]) -> set[tuple[str, str]]:
        return {self.errors[body] for body in bodies if body in self.errors}


def stanza_error(stanza: Element) -> tuple[str, str]:
    error = stanza.find("error")
    assert error is not None, stanza
    condition = next(c.name for c in error.elements() if c.xmlns == ns.STANZAS)
    return error.attrs["type"], condition


@dataclass
class Inbox:
    """A recipient: live on a raw client, or logging in at the end to fetch what was kept."""

    jid: str
    client: RawClient | None = None
    bodies: list[str] = field(default_factory=list)

    async def receive(self, count: int) -> list[str]:
        assert self.client is not None
        found: list[str] = []
        while len(found) < count:
            message = await self.client.expect("message")
            body = message.find_text("body")
            if body is not None:
                found.append(body)
        self.bodies += found
        return found

    async def log_in(self, server: RunningServer) -> None:
        """Log in, send presence, and take every message until a ping's answer."""
        name = self.jid.split("@", 1)[0]
        self.client = await RawClient.logged_in(server.host, server.port, name, cert=server.cert)
        await self.client.send("<presence/>")
        await self.client.send("<iq type='get' id='done'><ping xmlns='urn:xmpp:ping'/></iq>")
        while True:
            stanza = await self.client.next_element()
            if stanza.name == "iq" and stanza.attrs.get("id") == "done":
                return
            if stanza.name == "message" and (body := stanza.find_text("body")) is not None:
                self.bodies.append(body)


async def online(server: RunningServer, name: str) -> Inbox:
    client = await RawClient.logged_in(server.host, server.port, name, cert=server.cert)
    await client.send("<presence/>")
    await client.expect("presence")
    return Inbox(f"{name}@{server.domain}", client)


async def login_fails_temporarily(server: RunningServer, name: str) -> None:
    client = await RawClient.connect(server.host, server.port)
    await client.open_stream()
    await client.starttls(client_context(server.cert))
    await client.open_stream()
    failure = await client.auth_plain(name, "secret")
    assert failure.name == "failure", failure
    assert failure.find("temporary-auth-failure", ns.SASL) is not None, failure
    await client.close()


async def heal_and_close(rig: Rig, senders: list[Sender], offline: list[Inbox]) -> list[str]:
    """Heal the link, let the open period pass, and store through the trial call."""
    rig.proxy.heal()
    rig.clock.advance(OPEN_FOR)
    assert rig.state() == "half-open"
    trial = [await senders[0].message(offline[0].jid, "trial")]
    await senders[0].client.all_acknowledged()
    assert trial[0] not in senders[0].errors
    assert rig.state() == "closed"  # the trial call succeeded: closed by itself
    after = [await s.message(inbox.jid, "after") for s in senders for inbox in offline]
    for sender in senders:
        await sender.client.all_acknowledged()
    assert not any(body in sender.errors for sender in senders for body in after)
    return trial + after


async def account_for_everything(
    rig: Rig, senders: list[Sender], inboxes: list[Inbox], offline: list[Inbox]
) -> dict[str, int]:
    """Every message acknowledged and delivered, or reported to its sender; the counts."""
    for inbox in offline:
        await inbox.log_in(rig.server)
    received = {inbox.jid: set(inbox.bodies) for inbox in inboxes}
    counts = dict.fromkeys(("sent", "acked", "delivered", "errored", "both", "lost"), 0)
    for sender in senders:
        await sender.client.all_acknowledged()
        assert not sender.client.unacked  # so every message was acknowledged
        for body, to in sender.sent.items():
            delivered = body in received[to]
            errored = body in sender.errors
            counts["sent"] += 1
            counts["acked"] += 1
            counts["delivered"] += delivered
            counts["errored"] += errored
            counts["both"] += delivered and errored
            counts["lost"] += not (delivered or errored)
    assert counts["lost"] == 0, counts
    assert counts["delivered"] + counts["errored"] - counts["both"] == counts["sent"]
    return counts


async def start(rig: Rig) -> tuple[list[Sender], list[Inbox], list[Inbox]]:
    server = rig.server
    for name in ("alice", "dave", "bob", "erin", "carol", "frank"):
        await server.create_user(name)
    senders = [Sender(server, "alice"), Sender(server, "dave")]
    for sender in senders:
        await sender.client.start()
    live = [await online(server, "carol"), await online(server, "frank")]
    offline = [Inbox(f"bob@{server.domain}"), Inbox(f"erin@{server.domain}")]
    return senders, live, offline


async def chat(senders: list[Sender], live: list[Inbox], offline: list[Inbox], tag: str) -> None:
    """Every sender writes to every recipient; the live ones get theirs at once."""
    for sender in senders:
        for inbox in live + offline:
            await sender.message(inbox.jid, tag)
    for inbox in live:
        assert len(await inbox.receive(len(senders))) == len(senders)
    for sender in senders:
        await sender.client.all_acknowledged()


async def test_a_stalled_database_opens_the_gate_routing_goes_on_and_it_closes_when_healed(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = rig.server.server.storage
    assert isinstance(getattr(storage, "inner", None), PostgresStorage)
    senders, live, offline = await start(rig)
    await chat(senders, live, offline, "before")
    assert not any(sender.errors for sender in senders)

    rig.proxy.stall()
    stalled = [await s.message(inbox.jid, "stalled") for s in senders for inbox in offline]
    for sender in senders:
        await sender.client.all_acknowledged()  # answered, with errors: nothing hangs
    assert all(body in s.errors for s in senders for body in stalled if body in s.sent)
    assert rig.state() == "open"
    [row] = rig.server.server.gates.gate(STORAGE_GATE).statistics()
    assert row["partition"] == rig.database
    assert row["last_trip"]["policy"] == "consecutive_failures"
    assert row["last_trip"]["error"] == "TimeoutError"
    gated = [await s.message(inbox.jid, "gated") for s in senders for inbox in offline]
    for sender in senders:
        await sender.client.all_acknowledged()
        assert sender.errors_since(stalled + gated) <= {("wait", "resource-constraint")}
    assert all(body in s.errors for s in senders for body in gated if body in s.sent)
    await chat(senders, live, [], "live")  # in-memory routing to online users goes on
    await login_fails_temporarily(rig.server, "bob")

    listing = await run_cli(capsys, ["ctl", "--socket", str(rig.server.socket), "gates"])
    [row_text] = [line for line in listing.out.splitlines() if rig.database in line]
    assert row_text.split()[:3] == ["storage", rig.database, "open"]
    assert rig.proxy.statistics().held > 0  # the queries that timed out are still held

    await heal_and_close(rig, senders, offline)
    counts = await account_for_everything(rig, senders, live + offline, offline)
    print(f"stall: {counts}")
    assert counts["errored"] >= len(stalled) + len(gated)
    # The archive writes refused while the store was gated were kept and written once it
    # healed: every message the online users got, the stalled period's included, is in
    # their archives.
    await rig.server.eval("await server.modules['mam'].flush()")
    for inbox in live:
        page = await storage.query_archive(inbox.jid, ArchiveQuery(limit=1000))
        archived = {parse_element(m.stanza).find_text("body") for m in page.messages}
        assert set(inbox.bodies) <= archived, set(inbox.bodies) - archived


async def test_reset_connections_open_the_gate_and_it_closes_when_healed(rig: Rig) -> None:
    senders, live, offline = await start(rig)
    await chat(senders, live, offline, "before")

    rig.proxy.reset()
    failed = [await s.message(inbox.jid, "reset") for s in senders for inbox in offline]
    for sender in senders:
        await sender.client.all_acknowledged()
        assert sender.errors_since(failed) <= {
            ("wait", "internal-server-error"),
            ("wait", "resource-constraint"),
        }
    assert all(body in s.errors for s in senders for body in failed if body in s.sent)
    assert rig.state() == "open"
    [row] = rig.server.server.gates.gate(STORAGE_GATE).statistics()
    assert row["last_trip"]["policy"] == "consecutive_failures"
    assert row["last_trip"]["error"] != "TimeoutError"  # failed at once, not timed out
    await chat(senders, live, [], "live")
    await login_fails_temporarily(rig.server, "erin")

    await heal_and_close(rig, senders, offline)
    counts = await account_for_everything(rig, senders, live + offline, offline)
    print(f"reset: {counts}")
    assert rig.proxy.statistics().reset > 0
