"""The session registry of a cluster: a pg scope of sessions, read from memory.

Every client session joins the pg group of its bare JID in the ``sessions`` scope, as a member
``(node, resource, priority, available, since, flags)``. Each node therefore knows, for every
online user, which node holds each of the user's resources, without asking anyone: the router
reads it like the single-node registry, local sessions as they are and the others as
:class:`RemoteRoute` handles whose ``deliver`` forwards the stanza to the owning node (one hop,
:mod:`roost.cluster.forwarding`).

A member is a value: when a session's priority or availability changes (presence), the old
member leaves and a new one joins (:meth:`ClusterRegistry.refresh`).

Conflicting logins. Two nodes may bind the same full JID at nearly the same time. Both learn
of the other's member through pg and apply the same rule: the most recent login (``since``,
then the node name to break a tie) keeps the resource, and the node holding the other session
closes it with ``<conflict/>``, as one node does for a second login (RFC 6120 §7.7.2.2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from roost.cluster.pg import Monitor
from roost.cluster.pg_driver import ScopeDriver
from roost.router.registry import Route, SessionRegistry
from roost.xmpp.element import Element
from roost.xmpp.errors import StreamError
from roost.xmpp.jid import JID, parse_jid

if TYPE_CHECKING:
    from roost.cluster.forwarding import Forwarder

# (node, resource, priority, available, since, flags)
Member = tuple[str, str, int, bool, float, int]
SESSIONS_SCOPE: Final = "sessions"
FLAG_CARBONS: Final = 1


class RemoteRoute:
    """A session on another node, as the router sees it."""

    __slots__ = ("_forwarder", "available", "data", "jid", "node", "presence", "priority", "since")

    def __init__(self, jid: JID, member: Member, forwarder: Forwarder) -> None:
        node, _resource, priority, available, since, flags = member
        self.jid = jid
        self.node = node
        self.priority = priority
        self.available = available
        self.since = since
        self.presence: Element | None = None  # known only to its own node
        self.data: dict[str, Any] = {"carbons.enabled": bool(flags & FLAG_CARBONS)}
        self._forwarder = forwarder

    def deliver(self, stanza: Element) -> None:
        self._forwarder.forward(self.node, str(self.jid), stanza)

    def __repr__(self) -> str:
        return f"<RemoteRoute {self.jid} on {self.node} priority={self.priority}>"


class ClusterRegistry:
    """The registry interface of :class:`roost.router.registry.SessionRegistry`, cluster-wide.

    Local sessions are kept as in the single-node registry (and iterate, count and answer
    ``local()`` exactly as before); remote ones come from the pg scope's monitor.
    """

    def __init__(
        self,
        driver: ScopeDriver[str, Member],
        forwarder: Forwarder,
        on_conflict: Callable[[Route], None],
        on_available: Callable[[RemoteRoute], None] = lambda _route: None,
    ) -> None:
        self.node = driver.mesh.node
        self._driver = driver
        self._forwarder = forwarder
        self._on_conflict = on_conflict
        self._on_available = on_available
        self._local = SessionRegistry()
        self._members: dict[int, tuple[str, Member]] = {}  # id(route) -> (group, member)
        self._remote: dict[str, dict[str, RemoteRoute]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        driver.mesh.on_peer_up(self._notify)
        driver.mesh.on_peer_down(self._notify)
        monitor, current = driver.monitor_scope(self._wake)
        self._monitor = monitor
        for group, members in current.items():
            self._joined(group, members)

    # -- local sessions ------------------------------------------------------------------------

    def add(self, route: Route) -> Route | None:
        previous = self._local.add(route)
        if previous is not None:
            self._leave(previous)
        self._join(route, since=time.time())
        remote = self._remote.get(route.jid.bare_str, {}).get(route.jid.resource or "")
        if remote is not None:
            self._resolve(route, remote)
        return previous

    def remove(self, route: Route) -> bool:
        if not self._local.remove(route):
            return False
        self._leave(route)
        return True

    def refresh(self, route: Route) -> None:
        """Publish a local session's new priority, availability or flags."""
        entry = self._members.get(id(route))
        if entry is None or self._local.get(route.jid) is not route:
            return
        group, member = entry
        if member[2:4] == (route.priority, route.available) and member[5] == _flags(route):
            return
        self._driver.leave(group, member)
        self._join(route, since=member[4])

    def _join(self, route: Route, since: float) -> None:
        jid = route.jid
        member: Member = (
            self.node,
            jid.resource or "",
            route.priority,
            route.available,
            since,
            _flags(route),
        )
        self._members[id(route)] = (jid.bare_str, member)
        self._driver.join(jid.bare_str, member)

    def _leave(self, route: Route) -> None:
        entry = self._members.pop(id(route), None)
        if entry is not None:
            self._driver.leave(*entry)

    # -- reads (the router's interface) ----------------------------------------------------------

    def get(self, jid: JID) -> Route | None:
        route = self._local.get(jid)
        if route is not None:
            return route
        remote = self._remote.get(jid.bare_str)
        if remote is None or jid.resource is None:
            return None
        return remote.get(jid.resource)

    def local(self, jid: JID) -> Route | None:
        return self._local.get(jid)

    def routes(self, bare: str) -> list[Route]:
        routes = self._local.routes(bare)
        remote = self._remote.get(bare)
        if remote:
            routes.extend(remote.values())
        return routes

    def has_user(self, bare: str) -> bool:
        return self._local.has_user(bare) or bare in self._remote

    def has_local_user(self, bare: str) -> bool:
        return self._local.has_user(bare)

    def __len__(self) -> int:
        return len(self._local)

    def __iter__(self) -> Iterator[Route]:
        return iter(self._local)

    def users(self) -> int:
        return self._local.users()

    def remote_count(self) -> int:
        return sum(len(routes) for routes in self._remote.values())

    def count_by_node(self) -> dict[str, int]:
        """Sessions by the node holding them, this one included (O(sessions): for admin)."""
        counts = {self.node: len(self._local)}
        for routes in self._remote.values():
            for route in routes.values():
                counts[route.node] = counts.get(route.node, 0) + 1
        return counts

    # -- pg events -----------------------------------------------------------------------------

    def _wake(self, monitor: Monitor[str, Member]) -> None:
        for event in monitor.drain():
            if event.kind == "join":
                self._joined(event.group, event.members)
            else:
                self._left(event.group, event.members)
        self._notify()

    def _notify(self, *_: object) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def changed(self) -> asyncio.Future[None]:
        """A future done at the next change of the remote view or of the links (tests and
        tools; not the message path). Registered at once, so no change can slip by."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def _joined(self, group: str, members: tuple[Member, ...]) -> None:
        for member in members:
            if member[0] == self.node:
                continue
            resource = member[1]
            routes = self._remote.setdefault(group, {})
            current = routes.get(resource)
            if current is not None and (current.since, current.node) > (member[4], member[0]):
                continue  # an older login of the same resource elsewhere; it is going away
            jid = parse_jid(f"{group}/{resource}")
            route = RemoteRoute(jid, member, self._forwarder)
            routes[resource] = route
            local = self._local.get(jid)
            if local is not None:
                self._resolve(local, route)
            if route.available and route.priority >= 0:
                self._on_available(route)

    def _left(self, group: str, members: tuple[Member, ...]) -> None:
        routes = self._remote.get(group)
        if routes is None:
            return
        for member in members:
            if member[0] == self.node:
                continue
            route = routes.get(member[1])
            if route is not None and route.node == member[0] and route.since == member[4]:
                del routes[member[1]]
        if not routes:
            del self._remote[group]

    def _resolve(self, local: Route, remote: RemoteRoute) -> None:
        """Same full JID on two nodes: the most recent login wins, everywhere alike."""
        entry = self._members.get(id(local))
        if entry is None:
            return
        since = entry[1][4]
        if (since, self.node) < (remote.since, remote.node):
            self._on_conflict(local)


def _flags(route: Route) -> int:
    data = getattr(route, "data", None)
    return FLAG_CARBONS if data and data.get("carbons.enabled") else 0


def conflict(route: Route) -> None:
    """Close a local session that lost a cluster-wide login conflict."""
    stream_error = getattr(route, "stream_error", None)
    if stream_error is not None:
        stream_error(StreamError("conflict", "replaced by a newer session on another node"))
