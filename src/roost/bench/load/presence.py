"""The presence scenario: roster fan-out of presence changes.

Every client gets ``roster_size`` contacts: the nearest clients on a ring, half on each side,
so that every contact relation is mutual. Set-up, not measured, done the standard way so that
it works on any server:

1. Every client sends initial presence, and the set-up waits for each to be echoed: servers
   deliver subscription requests to available resources only (RFC 6121 §3.1.3).
2. Every client reads its roster. A contact it is already subscribed to (an earlier run) needs
   nothing more: a server ignores ``subscribed`` for a subscription that exists (§3.1.6), so
   asking again would wait forever. To each other contact it sends ``subscribe``; every client
   approves every ``subscribe`` it receives with ``subscribed`` (§3.1). A client is set up
   once it is subscribed to all its contacts, as the contact's ``subscribed`` or a roster
   push with subscription ``to`` or ``both`` says (a server should send both, §3.1.5-3.1.6;
   some send only the push).
3. The set-up waits until every client has seen all its contacts available.

The waits in steps 1 and 3 are for presence the server sends by itself; ``presence_timeout``
bounds them for a server that does not (the measurement then starts with a warning).

Measured: presence changes ``<presence><status>RUN NUMBER SENDER SENT_NS</status></presence>``
at ``rate``, round-robin over the clients, or in a closed loop (each client keeps ``window``
changes whose fan-out is incomplete). A change should reach every contact: each notification
is a delivery (its latency is recorded), the last one completes the fan-out
(``fanout_latency``). The server's echo of a change to its sender is ignored; a contact told
twice of one change is a ``duplicate``; a client that is not a contact but is told anyway
(subscriptions left by an earlier run with other sizes) counts as ``extra`` and makes a
warning, since the server did more work than measured. Notifications still owed after the
drain are ``lost``.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Final

from roost.bench.load.client import Client
from roost.bench.load.config import LoadConfig
from roost.bench.load.pacer import Pacer
from roost.bench.load.scan import attribute, error_condition, find_child, tag_end
from roost.bench.load.scenarios import Scenario, per_second
from roost.bench.load.stats import Counts, Latency

_ROSTER_ID: Final = "lg-roster"


class _Contact:
    """A presence client's set-up progress."""

    __slots__ = ("approved", "available", "contacts", "members", "roster_read")

    def __init__(self, contacts: list[str]) -> None:
        self.contacts = contacts
        self.members = frozenset(contacts)
        self.roster_read = False
        self.approved: set[str] = set()
        self.available: set[str] = set()


class Presence(Scenario):
    name = "presence"

    def __init__(self, config: LoadConfig, counts: Counts) -> None:
        super().__init__(config, counts)
        self.size = config.contacts()
        self._template = b"<presence><status>" + self._tag + b" %d %d %d</status></presence>"
        # number -> [contacts still to notify, sender, indexes of the contacts notified]
        self._pending: dict[int, list[Any]] = {}
        self._by_index: dict[int, Client] = {}
        self.extra = 0  # notifications to clients that are not contacts (an earlier run's)
        self.fanout = Latency()  # from a change to its last contact
        self._next = 0
        self._limit = config.max_messages or math.inf
        self._pacer = Pacer(config.rate) if config.rate is not None else None
        self._measuring = False
        self._subscribed = 0
        self._available = 0
        self._all_subscribed = asyncio.Event()
        self._all_available = asyncio.Event()
        self._rosters = 0
        self._all_rosters = asyncio.Event()
        self._expected = 0  # clients whose set-up must complete

    async def prepare(self, clients: list[Client]) -> None:
        total = len(clients)
        half = self.size // 2
        for i, client in enumerate(clients):
            near = [(i + d) % total for d in range(1, half + 1)]
            near += [(i - d) % total for d in range(1, half + 1)]
            client.data = _Contact([clients[j].bare for j in near])
        self._expected = total
        self._by_index = {client.index: client for client in clients}
        # Servers deliver subscription requests to available resources only (RFC 6121
        # §3.1.3), so every client is made available first.
        timeout = self.config.setup_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._become_available(clients, self.config.presence_wait)
        if self._interrupted():
            return
        # Subscriptions left by an earlier run stay: a server ignores 'subscribed' for a
        # subscription that exists (§3.1.6), so each client reads its roster and asks only
        # for what it lacks.
        for client in clients:
            client.send(
                f"<iq type='get' id='{_ROSTER_ID}'><query xmlns='jabber:iq:roster'/></iq>".encode()
            )
        await self._wait(deadline - loop.time(), self._all_rosters, self.gone, self.stopped)
        if self._interrupted():
            return
        if not self._all_rosters.is_set():
            missing = sum(1 for c in clients if not c.data.roster_read)
            self.counts.fail("subscribe", f"{missing} clients got no roster within {timeout:g} s")
            return
        await self._wait(deadline - loop.time(), self._all_subscribed, self.gone, self.stopped)
        if self._interrupted():
            return
        if not self._all_subscribed.is_set():
            missing = sum(1 for c in clients if len(c.data.approved) < self.size)
            self.counts.fail(
                "subscribe",
                f"{missing} clients did not get 'subscribed' from all {self.size} contacts "
                f"within {timeout:g} s",
            )
            return
        await self._wait(
            min(deadline - loop.time(), self.config.presence_wait),
            self._all_available,
            self.gone,
            self.stopped,
        )
        if not self._all_available.is_set():
            self.warnings.append(
                "not every client saw all its contacts available before the measurement"
            )

    def _interrupted(self) -> bool:
        # Stopped, or every client gone: reported as such, not as a set-up failure.
        return self.stopped.is_set() or self.gone.is_set()

    def iq(self, client: Client, element: bytes) -> None:
        state: _Contact | None = client.data
        if state is None:
            return
        kind = attribute(element, b"type")
        if kind == "set":  # a roster push: a subscription approved shows there too (§3.1.6)
            self._subscriptions(state, element)
            return
        if state.roster_read or attribute(element, b"id") != _ROSTER_ID:
            return
        state.roster_read = True
        if kind == "result":
            self._subscriptions(state, element)
        for contact in state.contacts:
            if contact not in state.approved:
                client.send(f"<presence to='{contact}' type='subscribe'/>".encode())
        self._rosters += 1
        if self._rosters == self._expected:
            self._all_rosters.set()

    def _subscriptions(self, state: _Contact, element: bytes) -> None:
        """The contacts a roster (result or push) shows this client subscribed to."""
        at = find_child(element, b"item")
        while at >= 0:
            item = element[at : tag_end(element, at) + 1]
            jid = attribute(item, b"jid")
            if jid in state.members and attribute(item, b"subscription") in ("to", "both"):
                self._approved(state, jid)
            at = find_child(element, b"item", at + 1)

    def _approved(self, state: _Contact, contact: str) -> None:
        if contact in state.approved:
            return
        state.approved.add(contact)
        if len(state.approved) == self.size:
            self._subscribed += 1
            if self._subscribed == self._expected:
                self._all_subscribed.set()

    async def run(self) -> None:
        if self.counts.failed("subscribe"):
            return
        self._measuring = True
        await self._drive(self._change, self._pacer)
        if not self._pending:
            self.drained.set()

    async def drain(self) -> None:
        if self._measuring:
            await self._wait(self.config.drain, self.drained, self.gone)

    def _change(self, sender: Client, sent_ns: int) -> None:
        number = self._next
        self._next = number + 1
        self._pending[number] = [self.size, sender, set()]
        sender.send(self._template % (number, sender.index, sent_ns))
        counts = self.counts
        counts.sent += 1
        if counts.sent >= self._limit:
            self._stop_sending()

    def presence(self, client: Client, element: bytes, now_ns: int) -> None:
        if self._measuring:
            status = element.find(b"<status")
            if status >= 0:
                start = element.find(b">", status) + 1
                parts = element[start : element.find(b"<", start)].split(b" ")
                if (
                    len(parts) == 4
                    and parts[0] == self._tag
                    and parts[1].isdigit()
                    and parts[2].isdigit()
                    and parts[3].isdigit()
                ):
                    number, origin, sent = int(parts[1]), int(parts[2]), int(parts[3])
                    self._notified(client, number, origin, sent, now_ns)
                    return
        self._setup(client, element)

    def _notified(
        self, client: Client, number: int, origin: int, sent_ns: int, now_ns: int
    ) -> None:
        if origin == client.index:
            return  # the server echoing the sender's own presence
        counts = self.counts
        sender = self._by_index.get(origin)
        state: _Contact = client.data
        if sender is None or sender.bare not in state.members:
            self.extra += 1  # a subscription this run did not set up
            return
        entry = self._pending.get(number)
        if entry is None or client.index in entry[2]:
            counts.duplicates += 1
            return
        counts.delivered += 1
        counts.last_delivery = now_ns
        self.latency.record_ns(now_ns - sent_ns)
        entry[2].add(client.index)
        entry[0] -= 1
        if entry[0]:
            return
        del self._pending[number]
        self.fanout.record_ns(now_ns - sent_ns)
        if self.sending:
            if self._pacer is None and sender.online:
                self._change(sender, time.monotonic_ns())
        elif not self._pending:
            self.drained.set()

    def _setup(self, client: Client, element: bytes) -> None:
        """Subscription handshake and contacts' availability (not measured)."""
        kind = attribute(element, b"type")
        sender = attribute(element, b"from") or ""
        bare = sender.split("/", 1)[0]
        state: _Contact | None = client.data
        if kind == "subscribe":
            client.send(f"<presence to='{bare}' type='subscribed'/>".encode())
        elif kind == "error":
            self.counts.errors[f"presence error: {error_condition(element)}"] += 1
        elif state is None:
            return
        elif bare == client.bare:
            if self._awaiting:
                self._echo(client, element)
        elif bare not in state.members:
            return
        elif kind == "subscribed":
            self._approved(state, bare)
        elif kind is None and bare not in state.available:
            state.available.add(bare)
            if len(state.available) == self.size:
                self._available += 1
                if self._available == self._expected:
                    self._all_available.set()

    def progress(self) -> str:
        counts = self.counts
        if not self._measuring:
            return (
                f"online {len(self._live())} subscribed {self._subscribed} "
                f"available {self._available}"
            )
        return (
            f"online {len(self._live())} changes {counts.sent} "
            f"notifications {counts.delivered} pending {len(self._pending)}"
        )

    def summary(self) -> dict[str, Any]:
        counts = self.counts
        lost = sum(entry[0] for entry in self._pending.values())
        data: dict[str, Any] = {
            "mode": "closed loop" if self._pacer is None else "open loop",
            "roster_size": self.size,
            "changes": counts.sent,
            "expected": counts.sent * self.size,
            "delivered": counts.delivered,
            "lost": lost,
            "duplicates": counts.duplicates,
            "extra": self.extra,
            "delivered_per_s": per_second(counts.delivered, counts),
            "fanout_latency": self.fanout.summary(),
        }
        if self._pacer is not None:
            data["pacer"] = self._pacer.summary()
        return data
