"""The three scenarios: what online clients do, and what is counted.

**idle**: clients stay logged in for the duration and do nothing (beyond an initial
``<presence/>`` unless turned off). What matters is what logging in cost: the login rate and,
with a server PID, the server's memory per session.

**chat**: 1:1 ``<message type='chat'>`` to a random online peer's full JID. The body is
``RUN NUMBER SENT_NS``: a per-run marker (so that a message stored offline by an earlier run
and delivered now is recognised and counted as ``stale``, not as a delivery), a number unique
in the run, and the send time. ``in_flight`` maps numbers to their sender; a delivery pops its
number (counted once; a number already popped is a ``duplicate``), an error bounce pops it as
an error. What is still in flight after the drain is ``lost``.

* Closed loop (no rate): every sender keeps ``window`` messages in flight and sends the next
  one when one of its messages is delivered (or bounces). Throughput is what the server
  sustains at that concurrency.
* Open loop (``rate``): a pacer sends at a fixed rate, round-robin over the online clients,
  whatever the server does. Each message carries the time it was *due*, so latency includes
  any delay of the pacer; if the pacer falls behind (a send more than 100 ms after it was due,
  or under 95% of the rate achieved) the result says so.

**presence**: every client gets ``roster_size`` contacts (the nearest clients on a ring, half on
each side), with mutual subscriptions set up the standard way: each client sends
``subscribe`` to its contacts and approves every ``subscribe`` it receives with
``subscribed`` (RFC 6121 §3.1). It is complete when every client has ``subscribed`` from all
its contacts (servers answer that also when the subscription already exists, so a re-run
works). Then every client sends initial presence, and once each has seen its contacts
available, the measured part starts: presence changes ``<presence><status>RUN NUMBER SENDER
SENT_NS</status></presence>`` at ``rate`` (or closed loop: ``window`` changes per client whose
fan-out is incomplete). Each change should reach every contact: a notification is a delivery
(latency per notification), the last one completes the fan-out (``fanout_latency``).
Notifications beyond the contacts (such as the sender's own echo, which servers send to the
user's resources) are not counted.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from typing import Any, Final

from roost.bench.load.client import Client, Handler
from roost.bench.load.config import LoadConfig
from roost.bench.load.scan import attribute, error_condition, find_child, tag_end
from roost.bench.load.stats import Counts, Latency

BEHIND_S: Final = 0.1  # a send this late marks the open loop as fallen behind
BEHIND_RATE: Final = 0.95  # as does achieving less than this share of the target rate
_ROSTER_ID: Final = "lg-roster"


class Scenario(Handler):
    """Common state: the online clients, the counters, and the stop conditions."""

    name = "idle"

    def __init__(self, config: LoadConfig, counts: Counts) -> None:
        self.config = config
        self.counts = counts
        self.latency = Latency()
        self.online: list[Client] = []
        self.online_count = 0
        self.sending = False
        self.warnings: list[str] = []
        self.gone = asyncio.Event()  # every client has disconnected
        self.stopped = asyncio.Event()  # the caller asked to stop (Ctrl-C)
        self.limit = asyncio.Event()  # max_messages reached
        self.drained = asyncio.Event()  # nothing in flight any more
        self._stale_online = False
        self._tag = secrets.token_hex(4).encode()
        self._rng = random.Random(config.seed)

    # -- client events --------------------------------------------------------------------

    def closed(self, client: Client, reason: str) -> None:
        counts = self.counts
        counts.disconnects += 1
        counts.errors[f"disconnected: {reason}"] += 1
        # The online list is compacted lazily (when next used): a server going away takes
        # every client at once, and rebuilding the list for each would be quadratic.
        self._stale_online = True
        self.online_count -= 1
        if self.online_count <= 0:
            self.gone.set()

    def _live(self) -> list[Client]:
        if self._stale_online:
            self.online = [c for c in self.online if c.online]
            self._stale_online = False
        return self.online

    # -- phases ---------------------------------------------------------------------------

    def start(self, clients: list[Client]) -> None:
        """The clients that logged in; the scenario is told of their disconnects from now."""
        self.online = [c for c in clients if c.online]
        self.online_count = len(self.online)
        if self.online_count:
            self.gone.clear()  # set by a disconnect before the scenario started counting
        else:
            self.gone.set()

    async def prepare(self, clients: list[Client]) -> None:
        if self.config.initial_presence:
            for client in clients:
                client.send(b"<presence/>")

    async def run(self) -> None:
        await self._wait(self.config.duration, self.stopped, self.gone)

    async def drain(self) -> None:
        """After sending stops: wait (up to ``drain`` seconds) for what is in flight."""

    def progress(self) -> str:
        return f"online {len(self._live())}"

    def summary(self) -> dict[str, Any]:
        return {}

    async def _wait(self, seconds: float | None, *events: asyncio.Event) -> None:
        """Until one of the events is set or ``seconds`` pass."""
        if any(event.is_set() for event in events):
            return
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _stop_sending(self) -> None:
        self.sending = False
        self.limit.set()

    def _peer(self, sender: Client) -> Client | None:
        online = self._live()
        size = len(online)
        if size < 2:
            return None
        at = int(self._rng.random() * size)
        peer = online[at]
        if peer is sender:
            peer = online[at + 1 if at + 1 < size else 0]
        return peer


class Pacer:
    """Open loop: calls ``send(i, due_ns)`` ``rate`` times a second until stopped."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.sent = 0
        self.max_lag = 0.0
        self.elapsed = 0.0

    async def run(self, scenario: Scenario, send: Any, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        start = loop.time()
        start_ns = time.monotonic_ns()
        while scenario.sending:
            now = loop.time()
            if now >= deadline:
                break
            due = int((now - start) * self.rate) + 1 - self.sent
            if due > 0:
                lag = now - (start + self.sent * interval)
                if lag > self.max_lag:
                    self.max_lag = lag
                for _ in range(due):
                    send(self.sent, start_ns + round(self.sent * interval * 1e9))
                    self.sent += 1
                    if not scenario.sending:
                        break
            delay = start + self.sent * interval - loop.time()
            await asyncio.sleep(delay if delay > 0 else 0)
        self.elapsed = loop.time() - start

    def summary(self) -> dict[str, Any]:
        achieved = self.sent / self.elapsed if self.elapsed > 0 else 0.0
        behind = self.max_lag > BEHIND_S or (
            self.elapsed > 1 and achieved < BEHIND_RATE * self.rate
        )
        return {
            "target_rate": self.rate,
            "achieved_rate": round(achieved, 1),
            "max_lag_ms": round(self.max_lag * 1000, 1),
            "fell_behind": behind,
        }


class Idle(Scenario):
    name = "idle"


class Chat(Scenario):
    name = "chat"

    def __init__(self, config: LoadConfig, counts: Counts) -> None:
        super().__init__(config, counts)
        tag = self._tag
        self._template = (
            b"<message type='chat' id='" + tag + b"-%d' to='%s'><body>" + tag + b" %d %d"
            b"</body></message>"
        )
        self._in_flight: dict[int, Client] = {}
        self._next = 0
        self._limit = config.max_messages or math.inf
        self._pacer = Pacer(config.rate) if config.rate is not None else None
        self._round_robin = 0

    async def run(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.duration
        self.counts.first_send = time.monotonic_ns()
        self.sending = True
        if self._pacer is None:
            for client in list(self.online):
                for _ in range(config.window):
                    if self.sending:
                        self._send(client, time.monotonic_ns())
            await self._wait(config.duration, self.stopped, self.gone, self.limit)
        else:
            pacer = asyncio.ensure_future(self._pacer.run(self, self._paced, deadline))
            try:
                await self._wait(config.duration, self.stopped, self.gone, self.limit)
            finally:
                self.sending = False
                await pacer
        self.sending = False
        if not self._in_flight:
            self.drained.set()

    async def drain(self) -> None:
        await self._wait(self.config.drain, self.drained, self.gone)

    def _paced(self, number: int, due_ns: int) -> None:
        online = self._live()
        if not online:
            self.sending = False
            return
        self._round_robin = (self._round_robin + 1) % len(online)
        self._send(online[self._round_robin], due_ns)

    def _send(self, sender: Client, sent_ns: int) -> None:
        peer = self._peer(sender)
        if peer is None:
            self.sending = False
            return
        number = self._next
        self._next = number + 1
        self._in_flight[number] = sender
        sender.send(self._template % (number, peer.jid_bytes, number, sent_ns))
        counts = self.counts
        counts.sent += 1
        if counts.sent >= self._limit:
            self._stop_sending()

    def message(self, client: Client, element: bytes, now_ns: int) -> None:
        head = element.find(b">")
        if b"error" in element[:head] and attribute(element, b"type") == "error":
            self._bounced(element)
            return
        body = element.find(b"<body")
        if body < 0:
            return  # not one of ours (a chat state, a server notice)
        start = element.find(b">", body) + 1
        parts = element[start : element.find(b"<", start)].split(b" ")
        counts = self.counts
        if len(parts) != 3 or parts[0] != self._tag:
            counts.stale += 1
            return
        number = int(parts[1])
        sender = self._in_flight.pop(number, None)
        if sender is None:
            if number < self._next:
                counts.duplicates += 1
            else:
                counts.stale += 1
            return
        counts.delivered += 1
        counts.last_delivery = now_ns
        self.latency.record_ns(now_ns - int(parts[2]))
        self._completed(sender)

    def _completed(self, sender: Client) -> None:
        if self.sending:
            if self._pacer is None and sender.online:
                self._send(sender, time.monotonic_ns())
        elif not self._in_flight:
            self.drained.set()

    def _bounced(self, element: bytes) -> None:
        ident = attribute(element, b"id") or ""
        tag, _, number = ident.partition("-")
        self.counts.errors[f"message error: {error_condition(element)}"] += 1
        if tag.encode() != self._tag or not number.isdigit():
            return
        sender = self._in_flight.pop(int(number), None)
        if sender is not None:
            self._completed(sender)

    def progress(self) -> str:
        counts = self.counts
        return (
            f"online {len(self._live())} sent {counts.sent} delivered {counts.delivered} "
            f"in flight {len(self._in_flight)}"
        )

    def summary(self) -> dict[str, Any]:
        counts = self.counts
        data: dict[str, Any] = {
            "mode": "closed loop" if self._pacer is None else "open loop",
            "sent": counts.sent,
            "delivered": counts.delivered,
            "lost": len(self._in_flight),
            "duplicates": counts.duplicates,
            "stale": counts.stale,
            "errors": sum(n for r, n in counts.errors.items() if r.startswith("message error")),
            "delivered_per_s": _per_second(counts.delivered, counts),
        }
        if self._pacer is not None:
            data["pacer"] = self._pacer.summary()
        return data


class _Contact:
    """A presence client's set-up progress."""

    __slots__ = ("approved", "available", "contacts", "echoed", "members", "roster_read")

    def __init__(self, contacts: list[str]) -> None:
        self.contacts = contacts
        self.members = frozenset(contacts)
        self.echoed = False
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
        self._next = 0
        self._limit = config.max_messages or math.inf
        self._pacer = Pacer(config.rate) if config.rate is not None else None
        self._round_robin = 0
        self._measuring = False
        self._subscribed = 0
        self._available = 0
        self._all_subscribed = asyncio.Event()
        self._all_available = asyncio.Event()
        self._echoed = 0
        self._all_echoed = asyncio.Event()
        self._rosters = 0
        self._all_rosters = asyncio.Event()
        self._expected = 0  # clients whose set-up must complete
        self.fanout = Latency()

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
        # §3.1.3), so every client is made available first; the server's echo of a client's
        # own presence (§4.2.2) says it has been.
        for client in clients:
            client.send(b"<presence/>")
        timeout = self.config.setup_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._wait(timeout, self._all_echoed, self.gone, self.stopped)
        if not self._all_echoed.is_set():
            self.warnings.append("not every client saw its own initial presence echoed")
        # Subscriptions left by an earlier run stay: a server ignores 'subscribed' for a
        # subscription that exists (§3.1.6), so each client reads its roster and asks only
        # for what it lacks.
        for client in clients:
            client.send(
                f"<iq type='get' id='{_ROSTER_ID}'><query xmlns='jabber:iq:roster'/></iq>".encode()
            )
        await self._wait(deadline - loop.time(), self._all_rosters, self.gone, self.stopped)
        if not self._all_rosters.is_set():
            missing = sum(1 for c in clients if not c.data.roster_read)
            self.counts.fail("subscribe", f"{missing} clients got no roster within {timeout:g} s")
            return
        await self._wait(deadline - loop.time(), self._all_subscribed, self.gone, self.stopped)
        if not self._all_subscribed.is_set():
            missing = sum(1 for c in clients if len(c.data.approved) < self.size)
            self.counts.fail(
                "subscribe",
                f"{missing} clients did not get 'subscribed' from all {self.size} contacts "
                f"within {timeout:g} s",
            )
            return
        await self._wait(deadline - loop.time(), self._all_available, self.gone, self.stopped)
        if not self._all_available.is_set():
            self.warnings.append(
                "not every client saw all its contacts available before the measurement"
            )

    def iq(self, client: Client, element: bytes) -> None:
        state: _Contact | None = client.data
        if state is None or state.roster_read or attribute(element, b"id") != _ROSTER_ID:
            return
        state.roster_read = True
        if attribute(element, b"type") == "result":
            at = find_child(element, b"item")
            while at >= 0:
                item = element[at : tag_end(element, at) + 1]
                jid = attribute(item, b"jid")
                if jid in state.members and attribute(item, b"subscription") in ("to", "both"):
                    self._approved(state, jid)
                at = find_child(element, b"item", at + 1)
        for contact in state.contacts:
            if contact not in state.approved:
                client.send(f"<presence to='{contact}' type='subscribe'/>".encode())
        self._rosters += 1
        if self._rosters == self._expected:
            self._all_rosters.set()

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
        config = self.config
        loop = asyncio.get_running_loop()
        self._measuring = True
        self.sending = True
        self.counts.first_send = time.monotonic_ns()
        if self._pacer is None:
            for client in list(self.online):
                for _ in range(config.window):
                    if self.sending:
                        self._change(client, time.monotonic_ns())
            await self._wait(config.duration, self.stopped, self.gone, self.limit)
        else:
            deadline = loop.time() + config.duration
            pacer = asyncio.ensure_future(self._pacer.run(self, self._paced, deadline))
            try:
                await self._wait(config.duration, self.stopped, self.gone, self.limit)
            finally:
                self.sending = False
                await pacer
        self.sending = False
        if not self._pending:
            self.drained.set()

    async def drain(self) -> None:
        if self._measuring:
            await self._wait(self.config.drain, self.drained, self.gone)

    def _paced(self, number: int, due_ns: int) -> None:
        online = self._live()
        if not online:
            self.sending = False
            return
        self._round_robin = (self._round_robin + 1) % len(online)
        self._change(online[self._round_robin], due_ns)

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
                if len(parts) == 4 and parts[0] == self._tag:
                    self._notified(client, parts, now_ns)
                    return
        self._setup(client, element)

    def _notified(self, client: Client, parts: list[bytes], now_ns: int) -> None:
        origin = int(parts[2])
        if origin == client.index:
            return  # the server echoing the sender's own presence
        counts = self.counts
        sender = self._by_index.get(origin)
        state: _Contact = client.data
        if sender is None or sender.bare not in state.members:
            self.extra += 1  # a subscription this run did not set up
            return
        entry = self._pending.get(int(parts[1]))
        if entry is None or client.index in entry[2]:
            counts.duplicates += 1
            return
        sent_ns = int(parts[3])
        counts.delivered += 1
        counts.last_delivery = now_ns
        self.latency.record_ns(now_ns - sent_ns)
        entry[2].add(client.index)
        entry[0] -= 1
        if entry[0]:
            return
        del self._pending[int(parts[1])]
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
            if kind is None and not state.echoed:
                state.echoed = True
                self._echoed += 1
                if self._echoed == self._expected:
                    self._all_echoed.set()
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
            "delivered_per_s": _per_second(counts.delivered, counts),
            "fanout_latency": self.fanout.summary(),
        }
        if self._pacer is not None:
            data["pacer"] = self._pacer.summary()
        return data


def _per_second(delivered: int, counts: Counts) -> float:
    """Deliveries over the time from the first send to the last delivery."""
    span = (counts.last_delivery - counts.first_send) / 1e9
    return round(delivered / span, 1) if delivered and span > 0 else 0.0


SCENARIOS: Final[dict[str, type[Scenario]]] = {"idle": Idle, "chat": Chat, "presence": Presence}
