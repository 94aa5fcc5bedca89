"""A node's membership of a cluster: the mesh, the pg scopes and forwarding, in one place.

Created by :class:`roost.core.server.Server` when ``cluster.node`` is set. The node's
credentials come from ``<data_dir>/cluster/nodes/<node>/`` when that exists (several nodes of
one machine sharing a data directory, as ``roost up --nodes N`` does), else from
``<data_dir>/cluster/`` (one node per data directory, the layout ``roost cluster init``
creates).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roost.cluster.ca import ClusterFiles, cluster_dir
from roost.cluster.forwarding import Forwarder
from roost.cluster.mesh import Mesh
from roost.cluster.mesh_types import parse_address
from roost.cluster.pg_driver import ScopeDriver
from roost.cluster.sessions import SESSIONS_SCOPE, ClusterRegistry, Member, conflict

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger(__name__)


def credentials(data_dir: Path, node: str) -> ClusterFiles:
    shared = cluster_dir(data_dir)
    own = shared / "nodes" / node
    if (own / "node.pem").exists():
        return ClusterFiles(shared / "ca.pem", own / "node.pem", own / "node-key.pem")
    return ClusterFiles.in_data_dir(data_dir)


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` to listen on; port 0 picks a free one. Raises ValueError."""
    # Port 0 (pick a free one) is fine to listen on, though not to dial.
    if text.endswith(":0"):
        host, _ = parse_address(text[:-2] + ":1")
        return host, 0
    return parse_address(text)


class ClusterNode:
    def __init__(self, server: Server) -> None:
        config = server.config
        assert config.cluster_node is not None
        self.name = config.cluster_node
        self.mesh = Mesh(
            config.cluster_node,
            credentials(config.data_dir, config.cluster_node),
            listen=listen_address(config.cluster_listen),
            seeds=list(config.cluster_join),
            heartbeat_interval=config.cluster_heartbeat_timeout / 5,
            heartbeat_timeout=config.cluster_heartbeat_timeout,
            backoff_max=min(10.0, max(1.0, config.cluster_heartbeat_timeout)),
        )
        self.forwarder = Forwarder(self.mesh, server)
        self.sessions: ScopeDriver[str, Member] = ScopeDriver(
            self.mesh, SESSIONS_SCOPE, str, Member
        )
        self.registry = ClusterRegistry(
            self.sessions,
            self.forwarder,
            conflict,
            # A session elsewhere that can take offline messages (priority >= 0) appeared.
            on_available=lambda route: server.hooks.run("cluster.remote_available", route),
        )
        self.forwarder.attach(self.registry)

    async def start(self) -> None:
        await self.mesh.start()

    async def stop(self) -> None:
        self.sessions.stop()
        await self.mesh.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.mesh.address

    def statistics(self) -> dict[str, Any]:
        return {
            "node": self.name,
            "peers": sorted(self.mesh.peers()),
            "remote_sessions": self.registry.remote_count(),
            "forwarding": self.forwarder.statistics(),
        }
