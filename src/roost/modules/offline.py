"""Offline messages (XEP-0160): stored while the user has no available resource, delivered in
order, with a XEP-0203 delay stamp, when a resource next becomes available.

Storing. A chat or normal message that finds no available resource (RFC 6121 §8.5.2.2.1)
comes here through the ``router.offline`` hook. It is stamped with
``<delay xmlns='urn:xmpp:delay' from='domain' stamp='...'/>`` and appended to the user's queue.
A message to an account that does not exist is bounced with ``<service-unavailable/>``
(§8.5.1); a full queue bounces with ``<resource-constraint/>``, so a sender always learns
that a message was not kept rather than losing it silently. So does a store that fails or
whose gate is open (:mod:`roost.gate.storage`): the sender gets a ``wait``-type error at once,
and the message counts as handled only because it was answered with that error (XEP-0198),
never as if it had been kept.

Stores to one user are chained: each starts once the one before it is done, so that they
are kept in the order they were routed whatever the store does concurrently (a pool of
PostgreSQL connections may finish a later statement first).

Delivering. When a session sends initial presence, its live deliveries are held while the
stored messages are read and written to it, then the held ones follow: the user sees stored
and live messages in the order the server accepted them. The read waits for the stores to
that user still under way: a message routed to storage just before the user came online
would otherwise be stored only after the read, and stay there while later ones were
delivered live. Messages are deleted from storage after they were written to the client's
stream. Reads for one user run one after the other, so that two of them never write the same
stored message.

In a cluster, the store may be on one node and the user's new session on another, whose read
cannot wait for stores it does not know of. A message stored after that read would stay in
storage, behind later messages delivered live, until the user's next login. So the storing
node tells the node of every session of the user that can take offline messages (priority
0 or more) to read the queue again (``cluster.offline_stored``, a
:class:`~roost.cluster.forwarding.Notice`): when a store ends and such a session is known,
and when such a session becomes known to it within ``RECHECK_FOR`` seconds of a store to that
user (the session's node may have read the queue before the store was done). A read that
finds nothing costs one query; a read too many never delivers a message twice, because reads
of one user are serialized and each deletes what it wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from roost.c2s.session import C2SSession
from roost.core.hooks import Stop
from roost.core.module import Module, register_module
from roost.gate.storage import storage_stanza_error
from roost.modules.expiry import EXPIRY_INTERVAL, expire_before
from roost.storage.base import StorageError
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.jid import JID
from roost.xmpp.parser import parse_element

# Seconds after a store during which a session of the user appearing on another node is told
# to read the queue again: longer than pg takes to spread a session, by far.
RECHECK_FOR = 30.0

# XEP-0334 hints that keep a message out of storage.
_NO_STORE = ("no-store", "no-permanent-store")
HINTS = "urn:xmpp:hints"
CHAT_STATES = "http://jabber.org/protocol/chatstates"


def delay_stamp(stamp: float) -> str:
    """XEP-0082 date-time in UTC, as XEP-0203 wants it."""
    moment = datetime.fromtimestamp(stamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def storable(stanza: Element) -> bool:
    """Whether a message carries anything worth keeping (not just a chat state, not a hint)."""
    has_content = False
    for child in stanza.elements():
        if child.xmlns == HINTS and child.name in _NO_STORE:
            return False
        if child.xmlns != CHAT_STATES:
            has_content = True
    return has_content


log = logging.getLogger(__name__)


class InTurn:
    """Work for one user at a time, in the order it was asked for: each piece is a task that
    first waits for the one asked for before it (whose outcome is its own)."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Task[None]] = {}  # user -> the last piece asked for

    def add(self, user: str, work: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        """Start ``work()`` once the user's earlier work is done; its task, under way now."""
        task = asyncio.ensure_future(self._after(self._last.get(user), work))
        self._last[user] = task
        task.add_done_callback(lambda done: self._done(user, done))
        return task

    async def done(self, user: str) -> None:
        """Return once every piece of work for ``user`` asked for so far is done."""
        while (last := self._last.get(user)) is not None:
            await asyncio.wait((last,))

    @staticmethod
    async def _after(
        before: asyncio.Task[None] | None, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        if before is not None:
            await asyncio.wait((before,))
        await work()

    def _done(self, user: str, task: asyncio.Task[None]) -> None:
        if self._last.get(user) is task:
            del self._last[user]


@register_module
class OfflineModule(Module):
    name = "offline"
    server_features = (ns.OFFLINE,)

    def start(self) -> None:
        self._stores = InTurn()
        self._reads = InTurn()
        self._stored_at: dict[str, float] = {}  # user -> when a store last ended, oldest first
        self.hook("router.offline", self._store)
        self.hook("c2s.available", self._on_available)
        if self.server.cluster is not None:
            self.hook("cluster.remote_available", self._remote_available)
            self.hook("cluster.offline_stored", self._read_again)
        self.every(EXPIRY_INTERVAL, self._expire_soon)

    def _store(self, stanza: Element, to: JID) -> Any:
        if not storable(stanza):
            return None  # chat states and no-store hints are not kept (XEP-0085, XEP-0334)
        # A task, not a coroutine left to the caller: under way from the moment it is routed,
        # for the next store and the next delivery to that user to wait for.
        return Stop(self._stores.add(to.bare_str, lambda: self._store_message(stanza, to)))

    async def _store_message(self, stanza: Element, to: JID) -> None:
        try:
            await self._try_store(stanza, to)
        except StorageError as exc:
            self.log.debug("message to %s not stored: %s", to.bare_str, exc)
            await _awaited(self.server.router.bounce(stanza, storage_stanza_error(exc)))

    async def _try_store(self, stanza: Element, to: JID) -> None:
        storage = self.server.storage
        user = to.bare_str
        router = self.server.router
        if not await storage.user_exists(user):
            await _awaited(router.bounce(stanza, errors.service_unavailable()))
            return
        limit = self.server.config.offline_limit
        if await storage.count_offline(user) >= limit:
            await _awaited(
                router.bounce(
                    stanza, errors.resource_constraint("the recipient's offline storage is full")
                )
            )
            return
        now = time.time()
        stored = stanza.shallow_copy()
        stored.children.append(
            Element(
                "delay",
                ns.DELAY,
                {"from": self.server.domain, "stamp": delay_stamp(now)},
                ["Offline Storage"],
            )
        )
        await storage.store_offline(user, stored.to_str(), now, stanza.attrs.get("from", ""))
        if self.server.cluster is not None:
            self._stored_in_cluster(user)

    # -- the cluster: a store and a read on different nodes ------------------------------------

    def _stored_in_cluster(self, user: str) -> None:
        now = time.monotonic()
        stored_at = self._stored_at
        stored_at.pop(user, None)
        stored_at[user] = now
        while True:  # oldest first: stop at the first recent one (the user's own, at worst)
            oldest = next(iter(stored_at))
            if now - stored_at[oldest] <= RECHECK_FOR:
                break
            del stored_at[oldest]
        nodes = {
            node
            for route in self.server.sessions.routes(user)
            if (node := getattr(route, "node", None)) is not None
            and route.available
            and route.priority >= 0
        }
        for node in nodes:
            self._notify(node, user)

    def _remote_available(self, route: Any) -> None:
        user = route.jid.bare_str
        when = self._stored_at.get(user)
        if when is not None and time.monotonic() - when <= RECHECK_FOR:
            self._notify(route.node, user)

    def _notify(self, node: str, user: str) -> None:
        cluster = self.server.cluster
        assert cluster is not None
        cluster.forwarder.notify(node, "offline_stored", user)

    def _read_again(self, user: str) -> None:
        for route in self.server.sessions.routes(user):
            if isinstance(route, C2SSession) and route.available and route.priority >= 0:
                self.server.spawn(self._deliver(route))

    def _on_available(
        self, pending: list[Awaitable[Any]], session: C2SSession
    ) -> list[Awaitable[Any]]:
        if session.priority >= 0:
            pending.append(self._deliver(session))
        return pending

    async def _deliver(self, session: C2SSession) -> None:
        """Read the user's stored messages to ``session``, after any read to that user under
        way (two at once would both write the messages neither had deleted yet)."""
        await self._reads.add(session.jid.bare_str, lambda: self._read(session))

    async def _read(self, session: C2SSession) -> None:
        storage = self.server.storage
        user = session.jid.bare_str
        session.hold()
        try:
            await self._stores.done(user)
            while True:
                messages = await storage.fetch_offline(user, 500)
                if not messages:
                    break
                taken: list[int] = []
                for message in messages:
                    try:
                        stanza = parse_element(message.stanza)
                    except errors.StreamError:
                        self.log.warning("dropping an unreadable stored message for %s", user)
                        taken.append(message.id)
                        continue
                    if not session.emit(stanza):
                        break  # the session ended meanwhile: the rest stays stored
                    taken.append(message.id)
                await storage.delete_offline(user, taken)
                if len(taken) < len(messages) or len(messages) < 500:
                    break
        finally:
            session.release()

    # -- expiry ------------------------------------------------------------------------------

    def _expire_soon(self) -> None:
        if self.server.config.offline_expire_after > 0:
            self.server.spawn(self.expire())

    async def expire(self, now: float | None = None) -> int:
        """Remove messages older than ``limits.offline_expire_after`` (none when 0); how many."""
        storage = self.server.storage
        return await expire_before(
            self.server.config.offline_expire_after, storage.expire_offline, "offline", now
        )


async def _awaited(awaitable: Awaitable[Any] | None) -> None:
    if awaitable is not None:
        await awaitable
