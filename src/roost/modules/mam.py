"""Message Archive Management (XEP-0313 ``urn:xmpp:mam:2``) for one-to-one chats, with unique
and stable stanza ids (XEP-0359), RSM paging (XEP-0059) and archiving preferences (XEP-0441).

What is archived (XEP-0313 §5.1.1). Messages of type ``chat`` or ``normal`` (or no type) that
carry a ``<body/>``: not groupchat, headline or error messages, not chat-state-only messages
(XEP-0085) or receipts, and not messages with a ``<no-store/>`` or ``<no-permanent-store/>``
hint (XEP-0334). A message between two local users is kept twice, once in each archive: the
sender's copy (``out``) when the sender's client sends it (the ``c2s.inbound`` hook, last of its
handlers, so that a message another module refused is not archived), the recipient's copy
(``in``) on its way to the recipient (``router.message``, late, so that only what is accepted
for delivery is archived), also when it goes on to offline storage. A message to oneself is
kept once, as received. Messages to other domains are not archived: there is no
server-to-server yet, and they bounce.

Preferences (XEP-0441): ``default`` is ``always`` (the server default, ``mam_default`` in the
configuration), ``never`` or ``roster``, and JIDs in the ``always`` and ``never`` lists override
it (``never`` wins over ``always``). They are read on the message path, so they are cached:
loaded when a session binds, and kept in a bounded table that also holds recently loaded offline
users. A message whose preferences are not cached (the first message to an offline user, say)
waits for them; on the recipient's side it is then routed again from the start, and this hook
lets it pass, so handlers of ``router.to_user`` and earlier ones of ``router.message`` see it
twice.

Stanza ids (XEP-0359 §3, XEP-0313 §3.5). The recipient's copy of the message as delivered gets
``<stanza-id xmlns='urn:xmpp:sid:0' by='recipient bare JID' id='...'/>``, its id in the
recipient's archive. Only this server makes stanza-ids ``by`` one of its users, so a client's
claim to one is removed where the message enters (``c2s.inbound``, whatever the message is:
XEP-0359 §3 asks that of the entity that would make them, archived or not). Every such
stanza-id a message carries on its way to ``router.message`` was therefore stamped here when
it was first routed: a message routed again (stream management's unacknowledged queue,
offline storage, another node's forwarding) keeps it and is not archived twice, on any node
of the cluster. The sender's copy gets no stanza-id on the wire: XEP-0313 §3.5 forbids it on
what goes to the contact.

Ids and order (see also :mod:`roost.storage.base`). Every archived message gets a *seq*: the
time it was handled in microseconds since the epoch, strictly increasing on this node (two in
one microsecond get consecutive values; the sender's and the recipient's copy of a message,
in two archives, share seq and id) and started above the last seq stored, so that a clock
stepped back while the server was down cannot put new messages before old ones. The seq is the
archive's order (XEP-0313 §3.1: arrival order), its time (the stamp is ``seq / 1e6``, exact to
the microsecond both ways), and the first 13 hex digits of the id; the other 12 are this
process's own (random at start), so that two nodes that archive in the same microsecond make
different ids, and the store keeps both records, in id order for that seq. Ids are not
secrets (a user sees only their own archive, and ejabberd's are plain timestamps); an earlier
keyed hash of each id, which let a node recognise its own, cost the message path two hashes a
message and did not survive a restart or a hop to another node, where removing claims at the
entry does. One number for order, time ranges and id lookups lets the store keep a single
index, on (owner, seq, id); it holds the other party too, so a conversation (``with``) is read
from it as well, scanning the owner's part of it (each further index would cost every
message a write).

Writing is batched, because archiving is mostly the cost of writing. Archiving never makes
delivery wait: the hooks append a record to a buffer and return. One background task
(``Server.spawn``) writes the buffer: it gathers records while they keep coming, for up to
``WINDOW`` seconds (it stops early when ``TICK`` seconds pass without a new record, when
``BATCH`` records wait, or when someone calls :meth:`MamModule.flush`), makes one
``archive_messages`` call (``BATCH``, ``HIGH_WATER`` and ``MAX_BUFFERED`` are in
:mod:`.mam_path`), and goes on while records keep coming. The window is long because
what a commit costs is mostly the index pages it writes, one per owner with new records (see
:mod:`roost.storage.sqlite`): a batch of a second of traffic writes each busy owner's page
once for many rows, where a tenth of a second wrote it for one or two, and the storage thread,
which shares the server's core with the event loop, spends about half as much per record
(docs/benchmarks-mam.md). The quiet tick keeps a light load (and a stopping server) from
waiting for the window. Queries call :meth:`MamModule.flush` first, so a user always finds the
messages just exchanged. ``Server.stop`` waits for background tasks before it stops modules,
which drains the buffer. When the store cannot keep up and ``HIGH_WATER`` records wait, new
messages wait for room like messages whose preferences are not cached (above), which slows
their senders down (their sessions stop reading) instead of losing messages or memory; only a
store that stalls completely lets the buffer reach ``MAX_BUFFERED``, past which messages go
unarchived, without a stanza-id.

A batch the store refuses (it failed, or its gate is open) goes back to the front of the
buffer and is tried again after the gate's retry time or a doubling pause
(:meth:`MamModule._retry_later`): the messages in it were delivered, and their owners will
look for them. Only a stopping server gives such records up, with an error in the log.

What waits in the buffer is what the stream-management contract does not need: a stanza is
acknowledged to its sender (XEP-0198) once it was delivered to a live session or stored
offline, which the router does before this module's record is written; the archive is the
user's history, and a crash loses at most the records not written yet (a window's, and the
batch being written), never a message.

Queries (§4): IQ set ``<query/>`` to one's own bare JID; other users' archives are
``<forbidden/>``. Form fields ``with``, ``start``, ``end``, ``before-id``, ``after-id``,
``ids``; RSM ``<max/>``, ``<after/>``, ``<before/>`` (empty: the last page); ``<flip-page/>``.
Results go to the querying session as ``<message><result><forwarded><delay/>original``, then the
IQ result ``<fin complete=''>`` with the RSM ``<first/>``, ``<last/>`` and ``<count/>``. A page
holds at most ``mam.max_page`` messages (a setting that changes at run time), whatever ``<max/>``
asks (no ``<max/>``: a full page). The count is exact up to ``COUNT_LIMIT`` matching messages
and left out above (counting scans the matching range). An IQ get of ``<query/>`` returns the
form, of ``<metadata/>`` the first and last message (§5), of ``<prefs/>`` the preferences; a set
of ``<prefs/>`` replaces them. Malformed input is answered as :mod:`.mam_protocol` describes; an
unknown id with ``<item-not-found/>``.

Left out: archiving groupchat messages and MUC archives, RSM ``<index/>`` (answered
``<feature-not-implemented/>``) and the ``index`` of ``<first/>``, the ``<store/>`` hint (a
message without a body is never archived), stanza-ids on sent carbons, removing messages from
an archive, and archive retention limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from roost.c2s.session import C2SSession
from roost.core.iq import IQRequest, Scope
from roost.core.module import Module, register_module
from roost.modules import mam_protocol as wire
from roost.modules.expiry import EXPIRY_INTERVAL, expire_before
from roost.modules.mam_path import ALWAYS, BATCH, MessagePath
from roost.modules.roster import RosterModule
from roost.storage.base import (
    ArchivePrefs,
    ArchiveQuery,
    ArchiveRecord,
    UnknownArchiveId,
)
from roost.xmpp import errors
from roost.xmpp.element import Element
from roost.xmpp.jid import JID

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger(__name__)

COUNT_LIMIT: Final = 10_000  # the RSM count is left out above this many matching messages
WINDOW: Final = 1.0  # seconds the writer gathers records at most before a storage call
TICK: Final = 0.1  # seconds without a new record after which the writer stops gathering
RETRY_FIRST: Final = 0.5  # seconds before a failed archive write is tried again ...
RETRY_MAX: Final = 30.0  # ... doubling up to this
PREFS_CACHED: Final = 10_000  # users whose preferences are kept in memory


@register_module
class MamModule(Module):
    name = "mam"
    account_features = (wire.MAM, wire.MAM_EXTENDED, wire.SID)

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        config = self.server.config
        default = config.mam_default
        if default not in wire.PREFS_MODES:
            raise ValueError(f"mam_default is one of {sorted(wire.PREFS_MODES)}, not {default!r}")
        self._default = ArchivePrefs(default)
        # Everything the message path touches lives in one native object (see mam_path);
        # its high_water can be lowered in a live node, its refused counts what was refused.
        self._hurry = asyncio.Event()  # ends the writer's wait for more records
        self.path = path = MessagePath(self, config.domain, self._hurry)
        self._prefs = path.prefs  # by owner; insertion order is eviction order (see _remember)
        self._buffer = path.buffer  # the write buffer (one list, changed in place)
        self._loading: dict[str, asyncio.Future[ArchivePrefs]] = {}
        # The writer's bookkeeping.
        self._writer: asyncio.Task[None] | None = None
        self._written = 0  # records ever written to storage (or given up when stopping)
        self._failures = 0  # consecutive failed archive writes
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self._room_made: asyncio.Future[None] | None = None  # set when the buffer shrinks
        self.waited = 0  # how often a message has waited for room in the buffer
        # Set once the ids continue from the last seq stored (see _continue_sequence).
        self._sequenced: asyncio.Future[None] | None = None

    def start(self) -> None:
        roster = self.server.modules.get("roster")
        self.path.roster = roster if isinstance(roster, RosterModule) else None
        self._sequenced = asyncio.get_running_loop().create_future()
        self.server.spawn(self._continue_sequence(self._sequenced))
        self.hook("c2s.bound", self._on_bound)
        self.hook("c2s.inbound", self.path.outgoing, priority=90)
        self.hook("router.message", self.path.incoming, priority=90)
        self.iq(Scope.ACCOUNT, wire.MAM, self._on_iq)
        self.every(EXPIRY_INTERVAL, self._expire_soon)

    def stop(self) -> None:
        super().stop()
        if self._buffer:
            # Server.stop drains the buffer before stopping modules; this is for a stop
            # without it (call flush() first).
            log.error("%d messages were not archived: stopped before flush()", len(self._buffer))

    # -- the message path ----------------------------------------------------------------------

    async def outgoing_later(self, stanza: Element, session: C2SSession, to: JID) -> None:
        """The sender's copy when the path could not decide at once (:class:`MessagePath`)."""
        owner = session.jid.bare_str
        if await self._allowed_later(owner, to):
            self.path.record(owner, str(to), "out", stanza)
        # Every other c2s.inbound handler ran before this one: route as the session would.
        pending = self.server.router.route(stanza, session)
        if pending is not None:
            await pending

    async def incoming_later(self, stanza: Element, owner: str, sender: JID) -> None:
        """The recipient's copy when the path could not decide at once."""
        if await self._allowed_later(owner, sender):
            stanza = self.path.archived_incoming(stanza, owner, sender)
        # The router has no way to resume after this hook: route the stanza again from the
        # start, and let it through when it comes back here.
        key = id(stanza)
        passing = self.path.passing
        passing[key] = stanza
        try:
            pending = self.server.router.route(stanza)
            if pending is not None:
                await pending
        finally:
            del passing[key]

    async def _continue_sequence(self, done: asyncio.Future[None]) -> None:
        """Start above the last seq stored, whatever the clock says (see the docstring)."""
        try:
            self.path.ids.advance(await self.server.storage.last_archive_seq())
        except Exception:
            log.exception("cannot read the last archive seq; going by the clock")
        finally:
            self.path.sequenced = True
            done.set_result(None)

    # -- preferences on the message path -------------------------------------------------------

    async def _allowed_later(self, owner: str, other: JID) -> bool:
        if not self.path.sequenced:
            assert self._sequenced is not None  # started
            await asyncio.shield(self._sequenced)
        while len(self._buffer) >= self.path.high_water:
            await self._room()
        prefs = await self.prefs(owner)
        decided = self.path.decided(prefs, owner, other)
        if decided is not None:
            return decided
        item = await self.server.storage.get_roster_item(owner, other.bare_str)
        return item is not None and item.visible

    async def prefs(self, owner: str) -> ArchivePrefs:
        """The owner's preferences (the server default when never set), cached."""
        cached = self._prefs.get(owner)
        if cached is not None:
            return cached
        loading = self._loading.get(owner)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[ArchivePrefs] = asyncio.get_running_loop().create_future()
        self._loading[owner] = future
        try:
            stored = await self.server.storage.get_archive_prefs(owner)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters may be none
            raise
        finally:
            del self._loading[owner]
        prefs = self._remember(owner, stored)
        future.set_result(prefs)
        return prefs

    def _remember(self, owner: str, stored: ArchivePrefs | None) -> ArchivePrefs:
        prefs = self._default if stored is None or stored == self._default else stored
        if prefs == ALWAYS:
            prefs = ALWAYS  # the common case, recognised by identity on the message path
        self._prefs.pop(owner, None)
        if len(self._prefs) >= PREFS_CACHED:
            # The oldest entry goes; for an online user, a later message loads it again.
            del self._prefs[next(iter(self._prefs))]
        self._prefs[owner] = prefs
        return prefs

    def _on_bound(self, session: C2SSession) -> None:
        owner = session.jid.bare_str
        if owner not in self._prefs and owner not in self._loading:
            self.server.spawn(self.prefs(owner))

    # -- the write buffer ----------------------------------------------------------------------

    def start_writer(self) -> None:
        """Called by the path when a record arrives and no writer runs."""
        self._writer = self.server.spawn(self._write())

    async def _write(self) -> None:
        storage = self.server.storage
        buffer = self._buffer
        try:
            while buffer:
                if len(buffer) < BATCH and not self._flushes and self._room_made is None:
                    await self._gather()
                batch = buffer[:BATCH]
                del buffer[:BATCH]
                try:
                    await storage.archive_messages(batch)
                except Exception as exc:
                    if not await self._retry_later(batch, exc):
                        continue
                else:
                    self._failures = 0
                self._written += len(batch)
                self._settle_flushes()
                room = self._room_made
                if room is not None and len(buffer) < self.path.high_water:
                    self._room_made = None
                    room.set_result(None)
        finally:
            self._writer = None
            self.path.writing = False
            self.path.forget_text()

    async def _retry_later(self, batch: list[ArchiveRecord], exc: Exception) -> bool:
        """A batch the store refused: put it back and wait before trying again (True: give
        it up). A failing or gated store is a passing state, and these messages were
        delivered: their senders were told so, and their owners expect them in the archive.
        The wait follows the gate's retry time when the gate refused, else doubles from
        ``RETRY_FIRST`` to ``RETRY_MAX``. Meanwhile records keep coming and the buffer's
        ``HIGH_WATER`` slows their senders down, as for a slow store. Only a stopping server
        gives records up, rather than stop never."""
        from roost.gate import GateRejected

        self._failures += 1
        if self.server.stopping:
            log.error("stopping with the store failing: %d messages left unarchived (%s)",
                      len(batch), exc)  # fmt: skip
            return True
        self._buffer[:0] = batch
        if isinstance(exc, GateRejected):
            pause = max(RETRY_FIRST, exc.retry_after)
        else:
            pause = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
        if self._failures == 1 or self._failures % 100 == 0:
            log.warning("archiving %d messages failed (%s); trying again in %.1f s",
                        len(batch), exc, pause)  # fmt: skip
        # Queries flush first: while the store fails they go on (and most likely fail
        # themselves) instead of waiting for it to recover.
        for _target, future in self._flushes:
            if not future.done():
                future.set_result(None)
        self._flushes = []
        loop = asyncio.get_running_loop()
        until = loop.time() + pause
        hurry = self._hurry
        hurry.clear()
        # A stop cuts the wait short, and so does a flush (a query): it gets a fresh attempt.
        while not self.server.stopping and not hurry.is_set() and loop.time() < until:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), min(TICK, until - loop.time()))
        return False

    async def _gather(self) -> None:
        """Wait while records keep coming: per record, a big batch costs a fraction of a small
        one (see the module docstring). Ends after ``WINDOW``, after a ``TICK`` without a new
        record, or early on :meth:`flush`, a full batch, or a message waiting for room."""
        hurry = self._hurry
        hurry.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WINDOW
        seen = self.path.buffered
        timer: asyncio.TimerHandle

        def tick() -> None:
            nonlocal seen, timer
            if self.path.buffered == seen or loop.time() + TICK > deadline:
                hurry.set()
            else:
                seen = self.path.buffered
                timer = loop.call_later(TICK, tick)

        timer = loop.call_later(TICK, tick)
        try:
            await hurry.wait()
        finally:
            timer.cancel()

    async def _room(self) -> None:
        """Wait until the buffer has room again (the writer took a batch)."""
        self.waited += 1
        if self._room_made is None:
            self._room_made = asyncio.get_running_loop().create_future()
        self._hurry.set()
        await asyncio.shield(self._room_made)

    def _settle_flushes(self) -> None:
        written = self._written
        waiting = []
        for target, future in self._flushes:
            if target <= written:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._flushes = waiting

    async def flush(self) -> None:
        """Wait until every message buffered before this call has been handed to storage."""
        target = self.path.buffered
        if self._written >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append((target, future))
        self._hurry.set()
        await future

    # -- IQs ------------------------------------------------------------------------------

    async def _on_iq(self, request: IQRequest) -> Element:
        if not request.own_account:
            raise errors.forbidden("an archive is open to its owner only")
        name = request.payload.name
        setting = request.type == "set"
        if name == "query":
            return await self._query(request) if setting else request.result(wire.query_form())
        if name == "prefs":
            return await (self._set_prefs(request) if setting else self._get_prefs(request))
        if name == "metadata" and not setting:
            return await self._metadata(request)
        raise errors.bad_request(f"<{name}/> is not a {wire.MAM} request")

    async def _query(self, request: IQRequest) -> Element:
        parsed = wire.parse_query(request.payload, max_page=self.server.config.mam_max_page)
        query = replace(parsed.query, count_limit=COUNT_LIMIT)
        owner = request.sender.bare_str
        await self.flush()  # the user finds the messages just exchanged
        try:
            page = await self.server.storage.query_archive(owner, query)
        except UnknownArchiveId as exc:
            raise errors.item_not_found(str(exc)) from None
        to = str(request.sender)
        messages = page.messages[::-1] if parsed.flip else page.messages
        for message, original in zip(messages, wire.parse_stored(messages), strict=True):
            result = wire.result_message(
                message, original, to=to, owner=owner, queryid=parsed.queryid
            )
            self._send(request, result)
        return request.result(wire.fin(page))

    def _send(self, request: IQRequest, stanza: Element) -> None:
        origin = request.origin
        if origin is not None:
            origin.send(stanza)
            return
        route = self.server.sessions.get(request.sender)
        if route is not None:
            route.deliver(stanza)

    async def _metadata(self, request: IQRequest) -> Element:
        owner = request.sender.bare_str
        await self.flush()
        storage = self.server.storage
        first = await storage.query_archive(owner, ArchiveQuery(limit=1, count=False))
        last = await storage.query_archive(owner, ArchiveQuery(limit=1, backward=True, count=False))
        return request.result(
            wire.metadata(
                first.messages[0] if first.messages else None,
                last.messages[0] if last.messages else None,
            )
        )

    async def _get_prefs(self, request: IQRequest) -> Element:
        return request.result(wire.prefs_element(await self.prefs(request.sender.bare_str)))

    async def _set_prefs(self, request: IQRequest) -> Element:
        prefs = wire.parse_prefs(request.payload)
        owner = request.sender.bare_str
        await self.server.storage.set_archive_prefs(owner, prefs)
        self._remember(owner, prefs)
        return request.result(wire.prefs_element(prefs))

    # -- expiry ------------------------------------------------------------------------------

    def _expire_soon(self) -> None:
        if self.server.config.mam_expire_after > 0:
            self.server.spawn(self.expire())

    async def expire(self, now: float | None = None) -> int:
        """Remove messages older than ``mam.expire_after`` (none when it is 0); how many."""
        storage = self.server.storage
        return await expire_before(
            self.server.config.mam_expire_after, storage.expire_archive, "archive", now
        )
