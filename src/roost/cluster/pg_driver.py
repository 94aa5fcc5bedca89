"""Running a pg :class:`~roost.cluster.pg.Scope` over the mesh (the thin I/O half of pg).

The scope is Sans-I/O; this driver feeds it the mesh's events (a link up or down, a message on
the scope's channel ``pg:<name>``) and sends what it queued after every call, so that a
``join`` reaches every linked node within one flush of the mesh. Monitor wake-ups are delivered
through ``call_soon``, never from inside a scope call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

from roost.cluster.mesh import Mesh
from roost.cluster.mesh_types import Peer
from roost.cluster.pg import Monitor, Scope
from roost.cluster.pg_messages import message_type

G = TypeVar("G")
M = TypeVar("M")

# The scopes running over each mesh, by name, for introspection (`roost ctl groups`).
_DRIVERS: WeakKeyDictionary[Mesh, dict[str, ScopeDriver[Any, Any]]] = WeakKeyDictionary()


def drivers(mesh: Mesh) -> dict[str, ScopeDriver[Any, Any]]:
    """The scopes that run over ``mesh`` now, by name."""
    return dict(sorted(_DRIVERS.get(mesh, {}).items()))


class ScopeDriver(Generic[G, M]):
    """One pg scope of this node, connected to the mesh."""

    def __init__(self, mesh: Mesh, name: str, group_type: Any, member_type: Any) -> None:
        self.mesh = mesh
        self.channel = f"pg:{name}"
        self.scope: Scope[G, M] = Scope(name, mesh.node, incarnation=mesh.incarnation)
        mesh.subscribe(self.channel, self._receive, type=message_type(group_type, member_type))
        mesh.on_peer_up(self._peer_up)
        mesh.on_peer_down(self._peer_down)
        _DRIVERS.setdefault(mesh, {})[name] = self

    # -- local operations ----------------------------------------------------------------------

    def join(self, group: G, *members: M) -> None:
        self.scope.join(group, *members)
        self._flush()

    def leave(self, group: G, *members: M) -> bool:
        left = self.scope.leave(group, *members)
        self._flush()
        return left

    def members(self, group: G) -> tuple[M, ...]:
        return self.scope.members(group)

    def monitor_scope(
        self, wakeup: Callable[[Monitor[G, M]], object] | None = None
    ) -> tuple[Monitor[G, M], dict[G, tuple[M, ...]]]:
        return self.scope.monitor_scope(wakeup)

    def stop(self) -> None:
        self.scope.stop()
        self._flush()
        running = _DRIVERS.get(self.mesh, {})
        if running.get(self.scope.name) is self:
            del running[self.scope.name]

    # -- mesh events ---------------------------------------------------------------------------

    def _peer_up(self, peer: Peer) -> None:
        self.scope.peer_up(peer.name)
        self._flush()

    def _peer_down(self, peer: Peer) -> None:
        self.scope.peer_down(peer.name)
        self._flush()

    def _receive(self, node: str, message: Any) -> None:
        self.scope.receive(node, message)
        self._flush()

    def _flush(self) -> None:
        send = self.mesh.send
        channel = self.channel
        for node, message in self.scope.outgoing():
            send(node, channel, message)
