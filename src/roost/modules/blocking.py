"""Blocking Command (XEP-0191): a user stops all communication with chosen JIDs.

The protocol (§3). IQs to the user's own account in ``urn:xmpp:blocking``: a get of
``<blocklist/>`` returns every blocked JID; a set of ``<block/>`` adds its ``<item jid/>``
children (none at all is ``<bad-request/>``); a set of ``<unblock/>`` removes its items, or
everything when it has none. An item whose JID does not parse is ``<jid-malformed/>``, and the
whole request fails (nothing is half-applied). After a change, every session of the user that
asked for the blocklist gets a push: an IQ-set with the same ``<block/>`` or ``<unblock/>``, as
§3.3 to §3.5 say (sessions that never asked do not track the list, and the XEP advises
clients to ask before changing it). Another account's blocklist is ``<forbidden/>``.

Matching (§6, the XEP-0016 order). An item ``user@domain/resource`` blocks only that resource,
``user@domain`` every resource of the user, ``domain/resource`` only that, and ``domain`` the
domain itself and everyone on it. So a JID is blocked when its full form, its bare form or its
domain is in the list: three set lookups.

Enforcement, in both directions, in two places:

* ``router.to_user``, for every stanza to a local user. From a JID the recipient blocks
  (§3.3): presence of any kind is dropped without a word, a message is answered with
  ``<service-unavailable/>``, an IQ get or set too, and any other IQ is dropped; the user
  appears offline to the blocked JID. A stanza that the server sends *on the user's behalf*
  (presence broadcasts and probes, answers of the presence module) to a JID the user blocks
  is dropped too, except errors: they are how a blocked sender learns about the block.
* ``c2s.inbound``, for every stanza the user's client sends to someone else (§3.3): one to a
  JID the user blocks is not routed and comes back as ``<not-acceptable/>`` with
  ``<blocked xmlns='urn:xmpp:blocking:errors'/>`` (an error, or an IQ result, is dropped).

Never blocked: traffic between the resources of one user (XEP-0191 §5, note) and stanzas from
or to the server itself, even when the user blocks the server's domain (that blocks every
*user* of it, not the server the user depends on for replies).

Presence around a change. On block, each of the user's resources sends unavailable presence to
the newly blocked JIDs that may see its presence (a roster subscription ``from``/``both``, or
directed presence, §3.3), so the user goes offline for them. On unblock, the user's current
presence goes to the same kind of contacts (§3.4), and the server probes the unblocked
contacts whose presence the user is subscribed to, since their presence was dropped while
they were blocked (an addition of roost; it keeps the user's view current).

The cache. The check sits on the path of every stanza, so it reads memory: a user's list is
kept while the user has a session here (loaded when a resource binds), and the lists of users
without one are kept in a bounded LRU once a stanza needed them. When a list is not in memory
yet, the hook returns an awaitable that loads it and then lets the stanza continue (the router
and the session queue the sender's later stanzas meanwhile, so order is kept). Changes go
through this module only, under a per-user lock, and write storage before the cache.

Left out: polite blocking is the only policy (subscriptions are kept, §4); stored offline
messages and pending subscription requests from a JID, received before it was blocked, are
still delivered. A stanza that continues after a load is routed without its origin session
(only IQs to a user's account from another user are affected, and no handler needs it). The
cache is per node, correct while each user's changes go through one node; a cluster needs to
tell the other nodes about changes.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

from roost.c2s.session import C2SSession
from roost.core.hooks import Stop
from roost.core.iq import IQRequest, Scope
from roost.core.locks import KeyedLock
from roost.core.module import Module, register_module
from roost.modules.presence import DIRECTED
from roost.modules.roster import RosterModule
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StanzaError
from roost.xmpp.jid import JID, InvalidJID, parse_jid

if TYPE_CHECKING:
    from roost.core.server import Server

BLOCKING: Final = "urn:xmpp:blocking"
BLOCKING_ERRORS: Final = "urn:xmpp:blocking:errors"
INTERESTED: Final = "blocking.interested"  # session.data key: the session asked for the list
MAX_ITEMS: Final = 10_000  # JIDs one user may block
RECENT: Final = 4096  # lists of users without a session here kept in memory

Blocklist = frozenset[str]
_EMPTY: Final[Blocklist] = frozenset()


def blocks(blocklist: Blocklist, jid: JID) -> bool:
    """Whether ``blocklist`` (normalised JID strings) blocks ``jid`` (XEP-0191 §6)."""
    return bool(blocklist) and (
        str(jid) in blocklist or jid.bare_str in blocklist or jid.domain in blocklist
    )


def blocked_error() -> StanzaError:
    """§3.3: what a user gets for a stanza to a JID they block."""
    return StanzaError(
        "not-acceptable", error_type="cancel", extra=Element("blocked", BLOCKING_ERRORS)
    )


def parse_items(payload: Element) -> list[str]:
    """The normalised JIDs of ``<item/>`` children, in order, without repeats."""
    found: dict[str, None] = {}
    for item in payload.elements("item", BLOCKING):
        try:
            found[str(parse_jid(item.attrs["jid"]))] = None
        except (KeyError, InvalidJID):
            raise errors.jid_malformed(f"not a JID: {item.attrs.get('jid', '')!r}") from None
        if len(found) > MAX_ITEMS:
            raise errors.resource_constraint("too many items")
    return list(found)


@register_module
class BlockingModule(Module):
    name = "blocking"
    server_features = (BLOCKING,)

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self._online: dict[str, Blocklist] = {}  # users with a session here
        self._recent: OrderedDict[str, Blocklist] = OrderedDict()  # others, bounded
        self._locks = KeyedLock()
        # Stanzas being routed again after their lists were loaded and checked (by id, only
        # for the synchronous part of the call that routes them).
        self._cleared: set[int] = set()

    def start(self) -> None:
        self.iq(Scope.ACCOUNT, BLOCKING, self._on_iq)
        # First in both folds: nothing should act on a stanza that is not going anywhere.
        self.hook("c2s.inbound", self._from_client, priority=10)
        self.hook("router.to_user", self._to_user, priority=10)
        self.hook("c2s.bound", self._on_bound)
        self.hook("c2s.closed", self._on_closed, priority=95)

    # -- the cache -----------------------------------------------------------------------

    def cached(self, user: str) -> Blocklist | None:
        found = self._online.get(user)
        if found is None:
            found = self._recent.get(user)
        return found

    def _remember(self, user: str, blocklist: Blocklist) -> None:
        blocklist = blocklist or _EMPTY  # one shared empty set for the common case
        if self.server.sessions.has_user(user):
            self._online[user] = blocklist
            self._recent.pop(user, None)
            return
        recent = self._recent
        recent[user] = blocklist
        recent.move_to_end(user)
        while len(recent) > RECENT:
            recent.popitem(last=False)

    async def blocklist(self, user: str) -> Blocklist:
        """The user's blocklist, from memory when possible."""
        found = self.cached(user)
        if found is not None:
            return found
        async with self._locks.hold(user):
            return await self._load(user)

    async def _load(self, user: str) -> Blocklist:
        """Under the user's lock: the list, read from storage if it is not in memory."""
        found = self.cached(user)
        if found is None:
            found = frozenset(await self.server.storage.get_blocklist(user))
            self._remember(user, found)
        return found

    def _on_bound(self, session: C2SSession) -> None:
        user = session.jid.bare_str
        if user in self._online:
            return
        found = self._recent.pop(user, None)
        if found is not None:
            self._online[user] = found
        else:
            # Loaded now, so that the user's first stanzas find it in memory.
            self.server.spawn(self.blocklist(user))

    def _on_closed(self, session: C2SSession) -> None:
        user = session.jid.bare_str
        if not self.server.sessions.has_user(user):
            found = self._online.pop(user, None)
            if found is not None:
                self._remember(user, found)  # the presence broadcast that follows needs it

    # -- enforcement: stanzas from the user's client ---------------------------------------

    def _from_client(self, stanza: Element, session: C2SSession) -> Any:
        to = stanza.attrs.get("to")
        if to is None:
            return stanza  # to the user's own account
        blocklist = self.cached(session.jid.bare_str)
        if blocklist is None:
            if id(stanza) in self._cleared:
                return stanza
            return Stop(self._from_client_later(stanza, session))
        if not blocklist:
            return stanza
        return self._client_verdict(stanza, session, blocklist)

    def _client_verdict(self, stanza: Element, session: C2SSession, blocklist: Blocklist) -> Any:
        try:
            target = parse_jid(stanza.attrs["to"])
        except (KeyError, InvalidJID):
            return stanza
        if self._exempt(target, session.jid.bare_str) or not blocks(blocklist, target):
            return stanza
        kind = stanza.attrs.get("type")
        if kind != "error" and not (stanza.name == "iq" and kind == "result"):
            session.emit(blocked_error().reply_to(stanza))
        return None

    async def _from_client_later(self, stanza: Element, session: C2SSession) -> None:
        blocklist = await self.blocklist(session.jid.bare_str)
        if self._client_verdict(stanza, session, blocklist) is None:
            return
        # Allowed: the rest of the inbound fold and the router, as the session would have.
        key = id(stanza)
        self._cleared.add(key)
        try:
            folded = self.server.hooks.fold("c2s.inbound", stanza, session)
        finally:
            self._cleared.discard(key)
        if isinstance(folded, Element):
            folded = self.server.router.route(folded, session)
        if folded is not None:
            await folded

    # -- enforcement: stanzas to a local user ----------------------------------------------

    def _to_user(self, stanza: Element, to: JID) -> Any:
        frm = stanza.attrs.get("from")
        if frm is None or (self._cleared and id(stanza) in self._cleared):
            return stanza
        try:
            sender = parse_jid(frm)
        except InvalidJID:
            return stanza
        user = to.bare_str
        if self._exempt(sender, user):
            return stanza
        inbound = self.cached(user)
        outbound: Blocklist | None = _EMPTY
        if sender.domain == self.server.domain:
            outbound = self.cached(sender.bare_str)
        if inbound is None or outbound is None:
            return Stop(self._to_user_later(stanza, to, sender))
        if not inbound and not outbound:
            return stanza
        return self._router_verdict(stanza, to, sender, inbound, outbound)

    def _router_verdict(
        self, stanza: Element, to: JID, sender: JID, inbound: Blocklist, outbound: Blocklist
    ) -> Any:
        kind = stanza.attrs.get("type")
        if blocks(inbound, sender):
            name = stanza.name
            if name == "message" or (name == "iq" and kind in ("get", "set")):
                return Stop(self.server.router.bounce(stanza, errors.service_unavailable()))
            return None  # presence, IQ results and errors: dropped silently
        if kind != "error" and blocks(outbound, to):
            return None  # the server speaks for the user only to those the user accepts
        return stanza

    async def _to_user_later(self, stanza: Element, to: JID, sender: JID) -> None:
        inbound = await self.blocklist(to.bare_str)
        outbound = _EMPTY
        if sender.domain == self.server.domain:
            outbound = await self.blocklist(sender.bare_str)
        verdict = self._router_verdict(stanza, to, sender, inbound, outbound)
        if verdict is None:
            return
        if isinstance(verdict, Stop):
            pending = verdict.value
        else:
            key = id(stanza)
            self._cleared.add(key)
            try:
                pending = self.server.router.route(stanza)
            finally:
                self._cleared.discard(key)
        if pending is not None:
            await pending

    def _exempt(self, other: JID, user: str) -> bool:
        """Between the user's own resources, or with the server itself: never blocked."""
        if other.bare_str == user:
            return True
        return other.local is None and other.domain == self.server.domain

    # -- the protocol (§3) -----------------------------------------------------------------

    async def _on_iq(self, request: IQRequest) -> Element:
        if not request.own_account:
            raise errors.forbidden("a blocklist belongs to its owner")
        user = request.sender.bare_str
        name = request.payload.name
        if request.type == "get":
            if name != "blocklist":
                raise errors.bad_request("get <blocklist/>")
            if request.origin is not None:
                request.origin.data[INTERESTED] = True
            result = Element("blocklist", BLOCKING)
            for jid in sorted(await self.blocklist(user)):
                result.add("item", attrs={"jid": jid})
            return request.result(result)
        if name == "block":
            items = parse_items(request.payload)
            if not items:
                raise errors.bad_request("<block/> needs at least one item")
            await self.block(user, items)
        elif name == "unblock":
            await self.unblock(user, parse_items(request.payload) or None)
        else:
            raise errors.bad_request("set <block/> or <unblock/>")
        return request.result()

    async def block(self, user: str, items: list[str]) -> None:
        """Block ``items`` (normalised JIDs) for ``user``, with pushes and presence."""
        async with self._locks.hold(user):
            current = await self._load(user)
            new = [item for item in items if item not in current]
            if new:
                if len(current) + len(new) > MAX_ITEMS:
                    raise errors.resource_constraint("the blocklist is full")
                await self.server.storage.block(user, new)
                # Before the cache changes: afterwards the check would stop these very stanzas.
                await self._go_offline_for(user, frozenset(new))
                self._remember(user, current | frozenset(new))
            self._push(user, "block", items)

    async def unblock(self, user: str, items: list[str] | None) -> None:
        """Unblock ``items``, or everyone when None, with pushes and presence."""
        async with self._locks.hold(user):
            current = await self._load(user)
            gone = current if items is None else current & frozenset(items)
            if gone:
                await self.server.storage.unblock(user, None if items is None else sorted(gone))
                self._remember(user, current - gone)
            self._push(user, "unblock", items or [])
            if gone:
                await self._come_back_for(user, gone)

    def _push(self, user: str, name: str, items: list[str]) -> None:
        for route in self.server.sessions.routes(user):
            if not isinstance(route, C2SSession) or not route.data.get(INTERESTED):
                continue
            iq = Element(
                "iq",
                ns.CLIENT,
                {
                    "type": "set",
                    "id": "push-" + secrets.token_hex(6),
                    "from": user,
                    "to": str(route.jid),
                },
            )
            payload = iq.add(name, BLOCKING)
            for item in items:
                payload.add("item", attrs={"jid": item})
            route.deliver(iq)

    # -- presence around a change ------------------------------------------------------------

    async def _contacts(
        self, user: str, changed: Blocklist, subscriptions: tuple[str, ...]
    ) -> set[str]:
        """The JIDs to address among the user's contacts with one of ``subscriptions`` that
        ``changed`` covers: the contact, or the blocked full JID of one of its resources."""
        roster = self.server.modules.get("roster")
        if not isinstance(roster, RosterModule):
            return set()
        targets: set[str] = set()
        full = [parse_jid(item) for item in changed if "/" in item]
        for item in (await roster.roster(user)).items:
            if item.subscription not in subscriptions:
                continue
            try:
                contact = parse_jid(item.jid)
            except InvalidJID:
                continue
            if blocks(changed, contact):
                targets.add(item.jid)
            else:
                targets.update(str(f) for f in full if f.bare_str == item.jid)
        return targets

    async def _go_offline_for(self, user: str, new: Blocklist) -> None:
        """§3.3: unavailable presence to newly blocked JIDs that may see the user's."""
        sessions = [r for r in self.server.sessions.routes(user) if isinstance(r, C2SSession)]
        if not sessions:
            return
        subscribers = await self._contacts(user, new, ("from", "both"))
        pending: list[Awaitable[Any]] = []
        for session in sessions:
            targets = set(subscribers) if session.available else set()
            directed: set[str] = session.data.get(DIRECTED, set())
            for jid in list(directed):
                if _covered(new, jid):
                    targets.add(jid)
                    directed.discard(jid)  # nothing more goes to it when this session ends
            for target in sorted(targets):
                presence = Element(
                    "presence",
                    ns.CLIENT,
                    {"from": str(session.jid), "to": target, "type": "unavailable"},
                )
                _collect(pending, self.server.router.route(presence))
        for awaitable in pending:
            await awaitable

    async def _come_back_for(self, user: str, gone: Blocklist) -> None:
        """§3.4: current presence to unblocked subscribers; probes to unblocked contacts."""
        sessions = [
            r
            for r in self.server.sessions.routes(user)
            if isinstance(r, C2SSession) and r.available and r.presence is not None
        ]
        if not sessions:
            return
        router = self.server.router
        pending: list[Awaitable[Any]] = []
        for target in sorted(await self._contacts(user, gone, ("from", "both"))):
            for session in sessions:
                assert session.presence is not None
                presence = session.presence.shallow_copy()
                presence.attrs["from"] = str(session.jid)
                presence.attrs["to"] = target
                _collect(pending, router.route(presence))
        for target in sorted(await self._contacts(user, gone, ("to", "both"))):
            probe = Element("presence", ns.CLIENT, {"from": user, "to": target, "type": "probe"})
            _collect(pending, router.route(probe))
        for awaitable in pending:
            await awaitable


def _covered(blocklist: Blocklist, jid: str) -> bool:
    try:
        return blocks(blocklist, parse_jid(jid))
    except InvalidJID:
        return False


def _collect(pending: list[Awaitable[Any]], awaitable: Awaitable[Any] | None) -> None:
    if awaitable is not None:
        pending.append(awaitable)
