"""The three scenarios: what online clients do, and what is counted.

Every scenario starts with a set-up phase that is not measured: unless turned off, each client
sends initial presence, and the measurement waits until the server has handled all of them
(each client has received its own presence back, RFC 6121 §4.2.2). Otherwise the burst of
work initial presence causes (roster loads, probes, offline messages) would land in the
first second of the measurement and in its latency tail. A server that never sends that echo
only delays the start, by ``presence_timeout`` (``--presence-timeout``), with a warning.

**idle**: clients stay logged in for the duration and do nothing. What matters is what logging
in cost: the login rate and, with a server PID, the server's memory per session.

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
  whatever the server does. Every message is stamped with the time it was *due* (see
  :mod:`roost.bench.load.pacer`), so that latency includes any delay in sending it; if the
  pacer falls behind (a send more than 100 ms after it was due, or under 95% of the rate
  achieved) the result says so.

**presence**: see :mod:`roost.bench.load.presence`.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from roost.bench.load.client import Client
from roost.bench.load.config import LoadConfig
from roost.bench.load.pacer import Pacer
from roost.bench.load.scan import attribute, error_condition
from roost.bench.load.shared import Handler
from roost.bench.load.stats import Counts, Latency


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
        self._awaiting: set[int] = set()  # clients whose initial presence is not echoed yet
        self._available_all = asyncio.Event()
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
            await self._become_available(clients, self.config.presence_wait)

    async def _become_available(self, clients: list[Client], seconds: float) -> None:
        """Send initial presence and wait until the server has handled it for every client.

        The server's echo of a client's presence to the client itself (RFC 6121 §4.2.2) says
        it is done. Waiting keeps the burst of work initial presence causes (roster loads,
        probes, offline messages) out of the measurement.
        """
        self._awaiting = {client.index for client in clients}
        for client in clients:
            client.send(b"<presence/>")
        await self._wait(seconds, self._available_all, self.gone, self.stopped)
        if self._awaiting:
            self.warnings.append(
                f"{len(self._awaiting)} clients did not see their initial presence handled "
                f"within {seconds:g} s; the measurement started anyway"
            )
        self._awaiting.clear()

    def presence(self, client: Client, element: bytes, now_ns: int) -> None:
        if self._awaiting:
            self._echo(client, element)

    def _echo(self, client: Client, element: bytes) -> None:
        if client.index not in self._awaiting or attribute(element, b"type") is not None:
            return
        if (attribute(element, b"from") or "").split("/", 1)[0] == client.bare:
            self._awaiting.discard(client.index)
            if not self._awaiting:
                self._available_all.set()

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

    async def _drive(self, send: Callable[[Client, int], None], pacer: Pacer | None) -> None:
        """The measured part: closed loop (``window`` sends per client to start with, the
        scenario sending more as they complete) or ``pacer``'s open loop."""
        config = self.config
        self.counts.first_send = time.monotonic_ns()
        self.sending = True
        if pacer is None:
            for client in list(self.online):
                for _ in range(config.window):
                    if self.sending:
                        send(client, time.monotonic_ns())
            await self._wait(config.duration, self.stopped, self.gone, self.limit)
        else:
            turn = 0

            def paced(number: int, stamp_ns: int) -> None:
                nonlocal turn
                online = self._live()
                if not online:
                    self.sending = False
                    return
                turn = turn + 1 if turn + 1 < len(online) else 0
                send(online[turn], stamp_ns)

            task = asyncio.ensure_future(pacer.run(lambda: self.sending, paced, config.duration))
            try:
                await self._wait(config.duration, self.stopped, self.gone, self.limit)
            finally:
                self.sending = False
                await task
        self.sending = False

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

    async def run(self) -> None:
        await self._drive(self._send, self._pacer)
        if not self._in_flight:
            self.drained.set()

    async def drain(self) -> None:
        await self._wait(self.config.drain, self.drained, self.gone)

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
        if element.find(b"error", 0, element.find(b">")) >= 0 and (
            attribute(element, b"type") == "error"
        ):
            self._bounced(element)
            return
        body = element.find(b"<body")
        if body < 0:
            return  # not one of ours (a chat state, a server notice)
        start = element.find(b">", body) + 1
        parts = element[start : element.find(b"<", start)].split(b" ")
        counts = self.counts
        try:
            if len(parts) != 3 or parts[0] != self._tag:
                raise ValueError
            number = int(parts[1])
            sent_ns = int(parts[2])
        except ValueError:
            counts.stale += 1  # not this run's (an earlier run's, stored offline)
            return
        sender = self._in_flight.pop(number, None)
        if sender is None:
            if number < self._next:
                counts.duplicates += 1
            else:
                counts.stale += 1
            return
        counts.delivered += 1
        counts.last_delivery = now_ns
        self.latency.record_ns(now_ns - sent_ns)
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
            "delivered_per_s": per_second(counts.delivered, counts),
        }
        if self._pacer is not None:
            data["pacer"] = self._pacer.summary()
        return data


def per_second(delivered: int, counts: Counts) -> float:
    """Deliveries over the time from the first send to the last delivery."""
    span = (counts.last_delivery - counts.first_send) / 1e9
    return round(delivered / span, 1) if delivered and span > 0 else 0.0
