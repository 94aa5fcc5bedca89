"""Helpers for tests that run meshes in one process: certificates, and waiting on events.

Tests wait for what they expect (a peer up, a message, a log line) with a timeout that is only
a safety net; nothing here sleeps to let time pass. Use with small ``heartbeat_*`` and
``backoff_*`` values on the meshes, so that failures are detected and repaired quickly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from roost.cluster.ca import ClusterFiles, init_cluster, issue
from roost.cluster.mesh import Mesh, Peer

T = TypeVar("T")

TIMEOUT = 15.0  # a safety net: waits end when the awaited event happens

# Settings that make a mesh notice and repair failures in well under a second.
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.05,
    "heartbeat_timeout": 0.5,
    "handshake_timeout": 2.0,
    "backoff_initial": 0.02,
    "backoff_max": 0.2,
}


def make_cluster(directory: Path, names: Iterable[str]) -> dict[str, ClusterFiles]:
    """A CA in ``directory/ca`` and a certificate for each node, in ``directory/NAME``."""
    names = list(names)
    ca_dir = directory / "ca"
    init_cluster(ca_dir, "ca-holder")
    files: dict[str, ClusterFiles] = {}
    for name in names:
        issued = issue(ca_dir, name, out=directory / name)
        files[name] = ClusterFiles(issued.ca, issued.cert, issued.key)
    return files


class PeerEvents:
    """Records a mesh's ``peer_up``/``peer_down`` callbacks, for tests to wait on."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.history: list[tuple[str, Peer]] = []
        self._cursor: dict[str, int] = {}  # per node: where next() looks from
        self._changed = asyncio.Event()
        mesh.on_peer_up(lambda peer: self._record("up", peer))
        mesh.on_peer_down(lambda peer: self._record("down", peer))

    def _record(self, kind: str, peer: Peer) -> None:
        self.history.append((kind, peer))
        self._changed.set()

    def count(self, kind: str, node: str) -> int:
        return sum(1 for k, p in self.history if k == kind and p.name == node)

    async def next(self, kind: str, node: str) -> Peer:
        """The first ``kind`` ("up" or "down") event for ``node`` after the last one returned.

        So ``next("down", "b")`` then ``next("up", "b")`` is b coming back after going down.
        """
        start = self._cursor.get(node, 0)

        def found() -> tuple[int, Peer] | None:
            for index in range(start, len(self.history)):
                k, peer = self.history[index]
                if k == kind and peer.name == node:
                    return index, peer
            return None

        index, peer = await self._until(found, f"{self.mesh.node}: {kind} {node}")
        self._cursor[node] = index + 1
        return peer

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, checking it after every event."""
        await self._until(lambda: True if predicate() else None, "condition")

    async def _until(self, probe: Callable[[], T | None], what: str) -> T:
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    result = probe()
                    if result is not None:
                        return result
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}: {self.history}") from None


class LocalCluster:
    """Meshes of one cluster in this process, on loopback ephemeral ports.

    ``async with LocalCluster(tmp_path, ["a", "b", "c"]) as cluster:`` issues the certificates;
    :meth:`start` starts a node (recording its peer events), and leaving the block stops all.
    """

    def __init__(self, directory: Path, names: Iterable[str], **settings: Any) -> None:
        self.files = make_cluster(directory, names)
        self.settings = {**FAST, **settings}
        self.meshes: dict[str, Mesh] = {}
        self.events: dict[str, PeerEvents] = {}

    async def __aenter__(self) -> LocalCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for mesh in list(self.meshes.values()):
            await mesh.stop()

    def mesh(self, name: str, seeds: Iterable[str] = (), **settings: Any) -> Mesh:
        """A node, not started: seeds are names of nodes already started."""
        mesh = Mesh(
            name,
            self.files[name],
            seeds=[self.meshes[seed].address for seed in seeds],
            **{"listen": ("127.0.0.1", 0), **self.settings, **settings},
        )
        self.meshes[name] = mesh
        self.events[name] = PeerEvents(mesh)
        return mesh

    async def start(self, name: str, seeds: Iterable[str] = (), **settings: Any) -> Mesh:
        mesh = self.mesh(name, seeds, **settings)
        await mesh.start()
        return mesh

    async def stop(self, name: str) -> None:
        await self.meshes[name].stop()

    async def fully_meshed(self, names: Iterable[str] | None = None) -> None:
        """Wait until each of the named nodes (default: all) is linked to all the others."""
        wanted = set(self.meshes if names is None else names)
        for name in wanted:
            mesh = self.meshes[name]

            def linked(mesh: Mesh = mesh) -> bool:
                return set(mesh.peers()) >= wanted - {mesh.node}

            await self.events[name].until(linked)


class Inbox:
    """Subscribes to a channel and queues what arrives as ``(node, message)``."""

    def __init__(self, mesh: Mesh, channel: str, type: Any = Any) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        mesh.subscribe(channel, lambda node, message: self.queue.put_nowait((node, message)), type)

    async def get(self) -> tuple[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            return await self.queue.get()


class LogWatch(logging.Handler):
    """Collects the mesh's log records; :meth:`wait_for` waits for one containing a text."""

    def __init__(self, logger: str = "roost.cluster") -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()
        self._logger = logging.getLogger(logger)

    def __enter__(self) -> LogWatch:
        self._previous_level = self._logger.level
        self._logger.addHandler(self)
        if self._logger.getEffectiveLevel() > logging.DEBUG:
            self._logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._previous_level)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]

    async def wait_for(self, *texts: str) -> logging.LogRecord:
        """The first record whose message contains every one of ``texts``."""
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    for record in self.records:
                        message = record.getMessage()
                        if all(text in message for text in texts):
                            return record
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no log line with {texts}: {self.messages()}") from None
