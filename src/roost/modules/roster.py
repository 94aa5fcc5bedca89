"""Rosters (RFC 6121 §2): get with versioning, set, remove, and pushes to every resource.

The roster module is also the one place that changes a roster. Every change, whether from a
roster set or from the presence module's subscription handling, goes through
:meth:`RosterModule.update`, which serializes changes per user, writes storage, keeps the
cached copy current and pushes the changed item to the user's interested resources
(RFC 6121 §2.1.6), with the new version (RFC 6121 §2.6).

A user's roster is cached while the user has sessions on this node: presence broadcasts and
probe answers read it on every presence change, which must not cost a storage round trip. In a
cluster, the node that changes a roster tells the other nodes holding sessions of that user
(mesh channel ``roster``), which drop their copy.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from roost.c2s.session import C2SSession
from roost.cluster.sessions import RemoteRoute
from roost.core.iq import IQRequest, Scope
from roost.core.locks import KeyedLock
from roost.core.module import Module, register_module
from roost.storage.base import Roster, RosterItem
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.jid import InvalidJID, parse_jid

ROSTER_CHANNEL = "roster"  # mesh channel: "this user's roster changed in storage"
INTERESTED = "roster.interested"  # session.data key: the session asked for the roster
MAX_ITEMS = 5000
MAX_GROUPS = 64
MAX_NAME = 1024

Change = Callable[[RosterItem | None], RosterItem | None]


def item_element(item: RosterItem, removed: bool = False) -> Element:
    """The ``<item/>`` of a roster result or push."""
    el = Element("item", ns.ROSTER, {"jid": item.jid})
    if removed:
        el.attrs["subscription"] = "remove"
        return el
    if item.name:
        el.attrs["name"] = item.name
    el.attrs["subscription"] = item.subscription
    if item.ask:
        el.attrs["ask"] = "subscribe"
    if item.approved:
        el.attrs["approved"] = "true"
    for group in item.groups:
        el.add_text("group", group)
    return el


@register_module
class RosterModule(Module):
    name = "roster"

    def __init__(self, server: object) -> None:
        super().__init__(server)  # type: ignore[arg-type]
        self._cache: dict[str, Roster] = {}
        self._locks = KeyedLock()

    def start(self) -> None:
        self.iq(Scope.ACCOUNT, ns.ROSTER, self._on_iq)
        self.hook("c2s.features", self._stream_features)
        self.hook("c2s.closed", self._on_closed, priority=90)
        cluster = self.server.cluster
        if cluster is not None:
            cluster.mesh.subscribe(ROSTER_CHANNEL, self._invalidated)
            self._undo.append(lambda: cluster.mesh.unsubscribe(ROSTER_CHANNEL))

    def _stream_features(self, features: Element, session: C2SSession) -> None:
        features.add("ver", ns.ROSTER_VER)  # RFC 6121 §2.6.1
        features.add("sub", ns.PRE_APPROVAL)  # RFC 6121 §3.4

    def _invalidated(self, node: str, user: Any) -> None:
        # Another node of the cluster changed this user's roster in storage.
        if isinstance(user, str):
            self._cache.pop(user, None)

    def _tell_other_nodes(self, user: str) -> None:
        cluster = self.server.cluster
        if cluster is None:
            return
        nodes = {
            route.node
            for route in self.server.sessions.routes(user)
            if isinstance(route, RemoteRoute)
        }
        for node in nodes:
            cluster.mesh.send(node, ROSTER_CHANNEL, user)

    def _on_closed(self, session: C2SSession) -> None:
        sessions = self.server.sessions
        if not sessions.has_user(session.jid.bare_str) or (
            self.server.cluster is not None
            and not self.server.cluster.registry.has_local_user(session.jid.bare_str)
        ):
            self._cache.pop(session.jid.bare_str, None)

    # -- reading -------------------------------------------------------------------------

    async def roster(self, user: str) -> Roster:
        """The user's roster, from the cache when the user is online here."""
        cached = self._cache.get(user)
        if cached is not None:
            return cached
        roster = await self.server.storage.get_roster(user)
        if self._caches(user):
            # Another coroutine may have loaded it meanwhile; keep the first copy.
            roster = self._cache.setdefault(user, roster)
        return roster

    def _caches(self, user: str) -> bool:
        """Whether the user has a session on this node (whose roster is then cached)."""
        cluster = self.server.cluster
        if cluster is not None:
            return cluster.registry.has_local_user(user)
        return self.server.sessions.has_user(user)

    def cached(self, user: str) -> Roster | None:
        return self._cache.get(user)

    async def item(self, user: str, contact: str) -> RosterItem | None:
        for item in (await self.roster(user)).items:
            if item.jid == contact:
                return item
        return None

    # -- changing ------------------------------------------------------------------------

    async def update(self, user: str, contact: str, change: Change) -> RosterItem | None:
        """Apply ``change`` to the user's item for ``contact`` and store the result.

        ``change`` gets a copy of the current item (None if there is none) and returns the
        new item, or None to remove it. Returns the new item. Changes of one user are
        serialized, so read-modify-write cannot interleave.
        """
        storage = self.server.storage
        async with self._locks.hold(user):
            roster = await self.roster(user)
            current = next((i for i in roster.items if i.jid == contact), None)
            before = _copy(current) if current is not None else None
            after = change(_copy(current) if current is not None else None)
            if after == before:
                return after
            if after is None:
                version = await storage.delete_roster_item(user, contact)
                roster.items = [i for i in roster.items if i.jid != contact]
            else:
                if current is None and len(roster.items) >= MAX_ITEMS:
                    raise errors.resource_constraint("the roster is full")
                version = await storage.put_roster_item(user, after)
                roster.items = [i for i in roster.items if i.jid != contact] + [after]
            roster.version = version
            self._tell_other_nodes(user)
            visible_before = before is not None and before.visible
            if after is not None and after.visible:
                self.push(user, item_element(after), version)
            elif visible_before:
                self.push(user, item_element(before, removed=True), version)  # type: ignore[arg-type]
            return after

    def push(self, user: str, item: Element, version: int) -> None:
        """Send a roster push to every interested resource of ``user`` (RFC 6121 §2.1.6)."""
        for route in self.server.sessions.routes(user):
            if isinstance(route, C2SSession) and not route.data.get(INTERESTED):
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
            iq.add("query", ns.ROSTER, {"ver": str(version)}).append(item)
            route.deliver(iq)

    # -- the jabber:iq:roster protocol ---------------------------------------------------

    async def _on_iq(self, request: IQRequest) -> Element | None:
        if not request.own_account:
            raise errors.forbidden("a roster belongs to its owner")  # RFC 6121 §2.1.5
        if request.payload.name != "query":
            raise errors.bad_request()
        if request.type == "get":
            return await self._get(request)
        return await self._set(request)

    async def _get(self, request: IQRequest) -> Element:
        user = request.sender.bare_str
        if request.origin is not None:
            request.origin.data[INTERESTED] = True
        roster = await self.roster(user)
        version = str(roster.version)
        asked = request.payload.attrs.get("ver")
        if asked is not None and asked == version and roster.version > 0:
            # RFC 6121 §2.6.3: up to date; changes since then come as pushes.
            return request.result()
        query = Element("query", ns.ROSTER, {"ver": version})
        for item in roster.items:
            if item.visible:
                query.append(item_element(item))
        return request.result(query)

    async def _set(self, request: IQRequest) -> Element:
        user = request.sender.bare_str
        items = list(request.payload.elements("item", ns.ROSTER))
        if len(items) != 1:
            raise errors.bad_request("a roster set has exactly one item")  # RFC 6121 §2.3.3
        el = items[0]
        try:
            contact = parse_jid(el.attrs.get("jid", "")).bare_str
        except InvalidJID:
            raise errors.jid_malformed("bad item JID") from None
        if el.attrs.get("subscription") == "remove":
            presence = self.server.modules.get("presence")
            if presence is not None:
                await presence.remove_contact(user, contact)  # type: ignore[attr-defined]
            else:
                await self.update(user, contact, lambda item: None)
            return request.result()
        name = el.attrs.get("name") or None
        if name is not None and len(name) > MAX_NAME:
            raise errors.not_acceptable("the name is too long")
        groups = [g.text for g in el.elements("group", ns.ROSTER)]
        if len(set(groups)) != len(groups):
            raise errors.bad_request("duplicate group")  # RFC 6121 §2.3.3
        if any(not g for g in groups) or len(groups) > MAX_GROUPS:
            raise errors.not_acceptable("empty group name or too many groups")

        def change(item: RosterItem | None) -> RosterItem:
            # Only name and groups are the client's to set (RFC 6121 §2.1.2); subscription
            # state changes only through presence. Setting an item that so far only held an
            # inbound request puts it in the roster.
            if item is None:
                item = RosterItem(jid=contact)
            item.name = name
            item.groups = tuple(groups)
            item.in_roster = True
            return item

        await self.update(user, contact, change)
        return request.result()


def _copy(item: RosterItem) -> RosterItem:
    return RosterItem(
        jid=item.jid,
        name=item.name,
        subscription=item.subscription,
        ask=item.ask,
        pending_in=item.pending_in,
        approved=item.approved,
        groups=item.groups,
        pending_in_stanza=item.pending_in_stanza,
        in_roster=item.in_roster,
    )
