"""Presence (RFC 6121 §3, §4): subscriptions, broadcast, probes and directed presence.

Subscription state lives in roster items (``subscription``, ``ask``, ``pending_in``,
``approved``) and changes only here, through :meth:`RosterModule.update`, following the
tables of RFC 6121 Appendix A. Outbound subscription stanzas (from the user's client) are
processed for the user, then routed stamped with the user's bare JID (§3.1.2); inbound ones
(to a local user) are processed for the contact's roster, then delivered or answered.

Locking rule: a roster is changed under its owner's lock and the stanza is routed only after
the lock is released, so that two users subscribing to each other at the same moment cannot
deadlock.

Broadcast presence (no ``to``) goes to every contact subscribed to the user's presence, and to
the user's own available resources (§4.2.2, §4.4.2). The first available presence of a
session makes it an *available resource*: probes go to the contacts whose presence the user
is subscribed to (§4.3), pending subscription requests are delivered again (§3.1.3), and the
``c2s.available`` hook lets other modules (offline delivery) act. Unavailable presence, sent
or implied by a disconnect, goes to the same contacts and to everyone that got directed
presence (§4.6.3).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from roost.c2s.session import C2SSession
from roost.cluster.sessions import RemoteRoute
from roost.core.hooks import Stop
from roost.core.module import Module, register_module
from roost.modules.roster import RosterModule
from roost.storage.base import RosterItem
from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.jid import JID, InvalidJID, parse_jid
from roost.xmpp.parser import parse_element

DIRECTED = "presence.directed"  # session.data key: JIDs sent directed presence
SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})


def _presence(frm: str, to: str, kind: str | None = None) -> Element:
    attrs = {"from": frm, "to": to}
    if kind:
        attrs["type"] = kind
    return Element("presence", ns.CLIENT, attrs)


def _readdressed(stanza: Element, to: str) -> Element:
    copy_ = stanza.shallow_copy()
    copy_.attrs["to"] = to
    return copy_


def _priority(stanza: Element) -> int:
    text = stanza.find_text("priority")
    if not text:
        return 0
    try:
        return max(-128, min(127, int(text.strip())))  # RFC 6121 §4.7.2.3
    except ValueError:
        return 0


@register_module
class PresenceModule(Module):
    name = "presence"

    def start(self) -> None:
        self.roster = self.depends("roster", RosterModule)
        self.hook("c2s.inbound", self._from_client, priority=40)
        self.hook("router.presence", self._to_user, priority=40)
        self.hook("c2s.closed", self._on_closed, priority=10)

    # -- from the user's client -------------------------------------------------------------

    def _from_client(self, stanza: Element, session: C2SSession) -> Any:
        if stanza.name != "presence":
            return stanza
        kind = stanza.attrs.get("type")
        to = stanza.attrs.get("to")
        if to is None:
            if kind is None or kind == "unavailable":
                return Stop(self._broadcast(session, stanza))
            return None  # a probe or subscription without a target means nothing
        if kind in SUBSCRIPTION_TYPES:
            return Stop(self._outbound_subscription(session, stanza, parse_jid(to)))
        if kind is None or kind == "unavailable":
            self._track_directed(session, stanza, to, kind)
        return stanza

    def _track_directed(
        self, session: C2SSession, stanza: Element, to: str, kind: str | None
    ) -> None:
        # RFC 6121 §4.6: remember who got directed presence, to send them unavailable later.
        directed: set[str] = session.data.setdefault(DIRECTED, set())
        if kind is None:
            directed.add(to)
        else:
            directed.discard(to)

    async def _broadcast(self, session: C2SSession, stanza: Element) -> None:
        if stanza.attrs.get("type") is not None or session.available:
            await self._announce(session, stanza, initial=False)
            return
        # Initial presence: from the moment the session is available, live deliveries to it
        # are held until the work that follows (probes, then offline replay) is done, so that
        # no live message overtakes a stored one. Presence for the session goes out at once.
        session.hold()
        try:
            await self._announce(session, stanza, initial=True)
        finally:
            session.release()

    async def _announce(self, session: C2SSession, stanza: Element, initial: bool) -> None:
        user = session.jid.bare_str
        kind = stanza.attrs.get("type")
        roster = await self.roster.roster(user)
        router = self.server.router
        pending: list[Awaitable[Any]] = []
        if kind is None:
            session.priority = _priority(stanza)
            session.presence = stanza
            session.available = True
            self.server.sessions.refresh(session)
        else:
            was_available = session.available
            session.available = False
            session.presence = None
            self.server.sessions.refresh(session)
            for to in session.data.pop(DIRECTED, ()):
                _collect(pending, router.route(_readdressed(stanza, to)))
            if not was_available:
                for awaitable in pending:
                    await awaitable
                return
        for item in roster.items:
            if item.subscription in ("from", "both"):
                _collect(pending, router.route(_readdressed(stanza, item.jid)))
        for route in self.server.sessions.routes(user):
            if route is session:
                session.emit(_readdressed(stanza, str(route.jid)))
            elif route.available:
                route.deliver(_readdressed(stanza, str(route.jid)))
                if initial:
                    # The new resource learns about the user's other ones (as a user is
                    # subscribed to itself).
                    presence = getattr(route, "presence", None)
                    if presence is not None:
                        session.emit(_readdressed(presence, str(session.jid)))
        if initial:
            probe_from = user
            for item in roster.items:
                if item.subscription in ("to", "both"):
                    _collect(pending, router.route(_presence(probe_from, item.jid, "probe")))
            for item in roster.items:
                if item.pending_in and item.pending_in_stanza:
                    session.send(_stored_request(item, session))
        for awaitable in pending:
            await awaitable
        if initial:
            for awaitable in self.server.hooks.fold("c2s.available", [], session) or ():
                await awaitable

    def _on_closed(self, session: C2SSession) -> None:
        # §4.5.2 / §4.6.3: a vanished resource is unavailable to everyone who saw it.
        successor = self.server.sessions.get(session.jid)
        if successor is not None and successor is not session and successor.available:
            return  # a new session of the same full JID has announced itself since
        if session.available or session.data.get(DIRECTED):
            unavailable = Element(
                "presence", ns.CLIENT, {"from": str(session.jid), "type": "unavailable"}
            )
            self.server.spawn(self._broadcast(session, unavailable))

    # -- outbound subscription handling (RFC 6121 §3, user side) ----------------------------

    async def _outbound_subscription(self, session: C2SSession, stanza: Element, to: JID) -> None:
        user = session.jid.bare_str
        contact = to.bare_str
        kind = stanza.attrs["type"]
        # §3.1.2 and friends: subscription stanzas go out from the bare JID, to the bare JID.
        out = stanza.shallow_copy()
        out.attrs["from"] = user
        out.attrs["to"] = contact
        router = self.server.router
        if contact == user:
            return
        if kind == "subscribe":
            await self.roster.update(user, contact, lambda item: _ask(item, contact))
            await _awaited(router.route(out))
        elif kind == "subscribed":
            before = await self.roster.item(user, contact)
            if before is not None and before.pending_in:
                await self.roster.update(user, contact, _approve)
                await _awaited(router.route(out))
                # §3.1.5: the new subscriber gets the user's current presence.
                for route in self.server.sessions.routes(user):
                    presence = getattr(route, "presence", None)
                    if route.available and presence is not None:
                        await _awaited(router.route(_readdressed(presence, contact)))
            elif before is None or before.subscription not in ("from", "both"):
                await self.roster.update(user, contact, lambda i: _preapprove(i, contact))
        elif kind == "unsubscribe":
            await self.roster.update(user, contact, _unsubscribe)
            await _awaited(router.route(out))
        elif kind == "unsubscribed":
            before = await self.roster.item(user, contact)
            await self.roster.update(user, contact, _cancel)
            await _awaited(router.route(out))
            if before is not None and before.subscription in ("from", "both"):
                # §3.2.2: the former subscriber learns the user is gone for it.
                for route in self.server.sessions.routes(user):
                    if route.available:
                        await _awaited(
                            router.route(_presence(str(route.jid), contact, "unavailable"))
                        )

    async def remove_contact(self, user: str, contact: str) -> None:
        """Roster removal (RFC 6121 §2.5.2): cancel both directions, then drop the item."""
        before = await self.roster.item(user, contact)
        await self.roster.update(user, contact, lambda item: None)
        if before is None:
            return
        router = self.server.router
        if before.subscription in ("to", "both") or before.ask:
            await _awaited(router.route(_presence(user, contact, "unsubscribe")))
        if before.subscription in ("from", "both") or before.pending_in:
            await _awaited(router.route(_presence(user, contact, "unsubscribed")))

    # -- to a local user (RFC 6121 §3, contact side; §4.3 probes) ---------------------------

    def _to_user(self, stanza: Element, to: JID) -> Any:
        kind = stanza.attrs.get("type")
        if kind in SUBSCRIPTION_TYPES:
            return Stop(self._inbound_subscription(stanza, to))
        if kind == "probe":
            return Stop(self._probe(stanza, to))
        return stanza

    async def _inbound_subscription(self, stanza: Element, to: JID) -> None:
        user = to.bare_str
        kind = stanza.attrs["type"]
        try:
            contact = parse_jid(stanza.attrs["from"]).bare_str
        except (InvalidJID, KeyError):
            return
        if not await self.server.storage.user_exists(user):
            return  # §3.1.3: no such user; say nothing (that would reveal accounts)
        delivered = _readdressed(stanza, user)
        delivered.attrs["from"] = contact
        router = self.server.router
        item = await self.roster.item(user, contact)
        if kind == "subscribe":
            if item is not None and item.subscription in ("from", "both"):
                # Already subscribed: answer for the user (§3.1.3, step 1).
                await _awaited(router.route(_presence(user, contact, "subscribed")))
                return
            if item is not None and item.approved:
                await self.roster.update(user, contact, _approve)
                await _awaited(router.route(_presence(user, contact, "subscribed")))
                for route in self.server.sessions.routes(user):
                    presence = getattr(route, "presence", None)
                    if route.available and presence is not None:
                        await _awaited(router.route(_readdressed(presence, contact)))
                return
            text = delivered.to_str()

            def request(item: RosterItem | None) -> RosterItem:
                if item is None:
                    item = RosterItem(jid=contact, in_roster=False)
                item.pending_in = True
                item.pending_in_stanza = text
                return item

            await self.roster.update(user, contact, request)
            router.deliver_to_user(delivered, user)
        elif kind == "subscribed":
            if item is None or not item.ask:
                return  # §3.1.6: not asked for; ignore
            await self.roster.update(user, contact, _subscribed)
            router.deliver_to_user(delivered, user)
        elif kind == "unsubscribe":
            if item is None or not (item.subscription in ("from", "both") or item.pending_in):
                return
            await self.roster.update(user, contact, _unsubscribed_from)
            router.deliver_to_user(delivered, user)
        elif kind == "unsubscribed":
            if item is None or not (item.subscription in ("to", "both") or item.ask):
                return
            await self.roster.update(user, contact, _unsubscribed_to)
            router.deliver_to_user(delivered, user)

    async def _probe(self, stanza: Element, to: JID) -> None:
        user = to.bare_str
        try:
            prober = parse_jid(stanza.attrs["from"])
        except (InvalidJID, KeyError):
            return
        server = self.server
        routes = [r for r in server.sessions.routes(user) if r.available]
        if server.cluster is not None:
            # A node answers for the sessions it holds: the probe goes to each other node
            # holding one of the user's resources, to be answered there.
            remote = {r.node for r in routes if isinstance(r, RemoteRoute)}
            routes = [r for r in routes if not isinstance(r, RemoteRoute)]
            if not server.cluster_local_only:
                for node in sorted(remote):
                    server.cluster.forwarder.forward(node, user, stanza, local=True)
        if not routes:
            return
        item = await self.roster.item(user, prober.bare_str)
        if item is None or item.subscription not in ("from", "both"):
            return  # §4.3.2: not subscribed; reveal nothing
        for route in routes:
            presence = getattr(route, "presence", None)
            if presence is not None:
                answer = _readdressed(presence, str(prober))
                answer.attrs["from"] = str(route.jid)
                await _awaited(self.server.router.route(answer))


# -- roster item transitions (RFC 6121 Appendix A) ------------------------------------------


def _ask(item: RosterItem | None, contact: str) -> RosterItem:
    # A.2.1 outbound subscribe: pending out, unless already subscribed.
    if item is None:
        return RosterItem(jid=contact, ask=True)
    if item.subscription not in ("to", "both"):
        item.ask = True
    item.in_roster = True
    return item


def _approve(item: RosterItem | None) -> RosterItem | None:
    # A.2.2 outbound subscribed / A.3.1 inbound subscribe with pre-approval.
    if item is None:
        return None
    item.subscription = {"none": "from", "to": "both"}.get(item.subscription, item.subscription)
    item.pending_in = False
    item.pending_in_stanza = None
    item.approved = False
    item.in_roster = True
    return item


def _preapprove(item: RosterItem | None, contact: str) -> RosterItem:
    # §3.4: approve a subscription request before it arrives.
    if item is None:
        return RosterItem(jid=contact, approved=True)
    item.approved = True
    return item


def _unsubscribe(item: RosterItem | None) -> RosterItem | None:
    # A.2.3 outbound unsubscribe.
    if item is None:
        return None
    item.subscription = {"to": "none", "both": "from"}.get(item.subscription, item.subscription)
    item.ask = False
    return item


def _cancel(item: RosterItem | None) -> RosterItem | None:
    # A.2.4 outbound unsubscribed.
    if item is None:
        return None
    item.subscription = {"from": "none", "both": "to"}.get(item.subscription, item.subscription)
    item.pending_in = False
    item.pending_in_stanza = None
    item.approved = False
    return item


def _subscribed(item: RosterItem | None) -> RosterItem | None:
    # A.3.2 inbound subscribed.
    if item is None:
        return None
    item.subscription = {"none": "to", "from": "both"}.get(item.subscription, item.subscription)
    item.ask = False
    return item


def _unsubscribed_from(item: RosterItem | None) -> RosterItem | None:
    # A.3.3 inbound unsubscribe: the contact no longer wants the user's presence.
    if item is None:
        return None
    item.subscription = {"from": "none", "both": "to"}.get(item.subscription, item.subscription)
    item.pending_in = False
    item.pending_in_stanza = None
    return item


def _unsubscribed_to(item: RosterItem | None) -> RosterItem | None:
    # A.3.4 inbound unsubscribed: the user's subscription was cancelled or refused.
    if item is None:
        return None
    item.subscription = {"to": "none", "both": "from"}.get(item.subscription, item.subscription)
    item.ask = False
    return item


def _stored_request(item: RosterItem, session: C2SSession) -> Element:
    assert item.pending_in_stanza is not None
    try:
        stanza = parse_element(item.pending_in_stanza)
    except Exception:
        stanza = _presence(item.jid, session.jid.bare_str, "subscribe")
    stanza.attrs["to"] = str(session.jid)
    return stanza


def _collect(pending: list[Awaitable[Any]], awaitable: Awaitable[Any] | None) -> None:
    if awaitable is not None:
        pending.append(awaitable)


async def _awaited(awaitable: Awaitable[Any] | None) -> None:
    if awaitable is not None:
        await awaitable
