"""The loss test: clients exchange messages while their connections are cut at random; every
message the server acknowledged reaches its recipient, in per-sender order.

Each client is an :class:`~roost.testing.smclient.SMClient`, a mobile client in miniature:
stream management with resumption, acks on request, unacknowledged stanzas resent. Connections
are cut with a real socket abort (no closing tag). After a cut the client either resumes
(most of the time) or comes back only after its session's resumption window has closed (the
window is closed with the test's clock, not by waiting), in which case it opens a new
session, learns from ``<failed h='N'/>`` which of its stanzas the server had handled, and
sends the rest again; the server has meanwhile routed whatever the old session had not
delivered for certain to offline storage.

Delivery is at least once: a message that reached a device whose session then expired
without the device acknowledging it is delivered again, as XEP-0198 allows. Devices drop such
repeats by message id, as real clients do; the test counts them and checks that, after that,
every message arrived exactly once and in the order its sender sent it.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from roost.c2s.session import C2SSession
from roost.testing import RunningServer
from roost.testing.smclient import SMClient
from roost.xmpp.element import Element
from roost.xmpp.jid import parse_jid
from tests.e2e.conftest import TIMEOUT

USERS = 8
# (messages, share of sends followed by a cut, seed): the everyday case, and a stormy one
# (a cut every twelve messages) that found the reorders tests/e2e/test_delivery_order.py keeps.
RUNS = [(600, 0.04, 20261128), (2000, 0.08, 9)]
EXPIRE_SHARE = 0.3


class Device:
    def __init__(self, server: RunningServer, name: str) -> None:
        self.name = name
        self.jid = f"{name}@localhost"
        self.client = SMClient(server.host, server.port, name, cert=server.cert, resource="dev")
        self.client.on_stanza = self._on_stanza
        self.seen: set[str] = set()
        self.received: dict[str, list[int]] = defaultdict(list)  # sender -> seqs, first copies
        self.duplicates = 0
        self.total = 0
        self.presence = asyncio.Event()
        self.changed = asyncio.Event()

    def _on_stanza(self, stanza: Element) -> None:
        if stanza.name == "presence":
            self.presence.set()
            return
        if stanza.name != "message" or stanza.attrs.get("type") == "error":
            return
        message_id = stanza.attrs.get("id", "")
        self.total += 1
        if message_id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(message_id)
        sender, seq = message_id.rsplit(":", 1)
        self.received[sender].append(int(seq))
        self.changed.set()

    async def online(self) -> None:
        self.presence.clear()
        await self.client.send("<presence/>")
        await asyncio.wait_for(self.presence.wait(), TIMEOUT)


@pytest.mark.parametrize(("messages", "cut_probability", "seed"), RUNS, ids=["calm", "stormy"])
async def test_no_acknowledged_message_is_lost_when_connections_drop(
    roost_server: RunningServer, messages: int, cut_probability: float, seed: int
) -> None:
    rng = random.Random(seed)
    server = roost_server.server
    devices = [Device(roost_server, f"user{i}") for i in range(USERS)]
    for device in devices:
        await roost_server.create_user(device.name)
        await device.client.start()
        await device.online()
    detached: asyncio.Queue[str] = asyncio.Queue()
    server.hooks.add("c2s.detached", lambda session: detached.put_nowait(session.jid.bare_str))

    sent: dict[tuple[str, str], list[int]] = defaultdict(list)  # (sender, to) -> seqs
    seq: dict[str, int] = defaultdict(int)
    cuts = resumed = expired = 0
    for _ in range(messages):
        sender = rng.choice(devices)
        recipient = rng.choice([d for d in devices if d is not sender])
        seq[sender.name] += 1
        number = seq[sender.name]
        sent[(sender.name, recipient.name)].append(number)
        await sender.client.send(
            f"<message to='{recipient.jid}' type='chat' id='{sender.name}:{number}'>"
            f"<body>{number}</body></message>"
        )
        if rng.random() < cut_probability:
            victim = rng.choice(devices)
            cuts += 1
            victim.client.abort()
            assert await asyncio.wait_for(detached.get(), TIMEOUT) == victim.jid
            if rng.random() < EXPIRE_SHARE:
                # The resumption window closes before the device is back.
                now = asyncio.get_running_loop().time()
                for session in server.resumption.expired(now + server.config.sm_timeout + 1):
                    session.expire()
                await server.settle()
                assert not await victim.client.resume()
                expired += 1
                await victim.online()  # offline messages come with initial presence
            else:
                assert await victim.client.resume()
                resumed += 1

    # Every message was acknowledged by the server (after resends where needed).
    for device in devices:
        await device.client.all_acknowledged()
        assert not device.client.unacked

    def complete() -> bool:
        return all(
            devices_by_name[to].received[frm] == numbers for (frm, to), numbers in sent.items()
        )

    devices_by_name = {d.name: d for d in devices}

    async def wait_complete() -> None:
        while not complete():
            waits = [asyncio.ensure_future(d.changed.wait()) for d in devices]
            for device in devices:
                device.changed.clear()
            if complete():
                for w in waits:
                    w.cancel()
                break
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()

    try:
        await asyncio.wait_for(wait_complete(), 30)
    finally:
        missing = {
            key: sorted(set(numbers) - set(devices_by_name[key[1]].received[key[0]]))
            for key, numbers in sent.items()
        }
        missing = {k: v for k, v in missing.items() if v}
        print(
            f"\nloss test: {messages} messages between {USERS} devices, {cuts} connection cuts "
            f"({resumed} resumed, {expired} after the window closed); "
            f"delivered {sum(d.total for d in devices)} copies, "
            f"{sum(d.duplicates for d in devices)} repeats dropped by id; missing: {missing}"
        )
    for (frm, to), numbers in sent.items():
        assert devices_by_name[to].received[frm] == numbers, (frm, to)
    for device in devices:
        assert isinstance(server.sessions.get(parse_jid(f"{device.jid}/dev")), C2SSession)
    for device in devices:
        await device.client.close()
