"""The session registry: which sessions each user has, and how to reach them.

A *route* is anything a stanza can be delivered to for one full JID: a client session on this
node, or (in a cluster) a handle on a session of another node. The router asks the registry
for the routes of a bare JID and delivers to them; it never cares where they live.

This is the single-node registry, a dict of dicts read in O(1). The cluster replaces it with a
process-group scope that has the same reading interface, so the router does not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from roost.xmpp.element import Element
from roost.xmpp.jid import JID


class Route(Protocol):
    """A destination for stanzas addressed to one full JID."""

    @property
    def jid(self) -> JID: ...

    @property
    def priority(self) -> int: ...

    @property
    def available(self) -> bool:
        """True once the session sent initial presence, until it goes unavailable."""
        ...

    def deliver(self, stanza: Element) -> None:
        """Send ``stanza`` to the client as it is (its ``to`` and ``from`` already set)."""
        ...


class SessionRegistry:
    """Local sessions by bare JID, then by resource."""

    __slots__ = ("_by_bare", "_count")

    def __init__(self) -> None:
        self._by_bare: dict[str, dict[str, Route]] = {}
        self._count = 0

    def add(self, route: Route) -> Route | None:
        """Register a route; returns the route it replaces for the same full JID, if any."""
        jid = route.jid
        resource = jid.resource
        if resource is None:
            raise ValueError(f"a route needs a full JID, not {jid}")
        routes = self._by_bare.setdefault(jid.bare_str, {})
        previous = routes.get(resource)
        routes[resource] = route
        if previous is None:
            self._count += 1
        return previous

    def remove(self, route: Route) -> bool:
        """Unregister ``route`` if it is still the one registered for its full JID."""
        jid = route.jid
        routes = self._by_bare.get(jid.bare_str)
        if routes is None or routes.get(jid.resource or "") is not route:
            return False
        del routes[jid.resource or ""]
        if not routes:
            del self._by_bare[jid.bare_str]
        self._count -= 1
        return True

    def refresh(self, route: Route) -> None:
        """A route's priority, availability or flags changed (a cluster republishes them)."""

    def local(self, jid: JID) -> Route | None:
        return self.get(jid)

    def get(self, jid: JID) -> Route | None:
        routes = self._by_bare.get(jid.bare_str)
        if routes is None or jid.resource is None:
            return None
        return routes.get(jid.resource)

    def routes(self, bare: str) -> list[Route]:
        """Every route of a user (bare JID string), in no particular order."""
        routes = self._by_bare.get(bare)
        return list(routes.values()) if routes else []

    def has_user(self, bare: str) -> bool:
        return bare in self._by_bare

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Route]:
        for routes in list(self._by_bare.values()):
            yield from list(routes.values())

    def users(self) -> int:
        return len(self._by_bare)
