"""Runtime overrides catch up: a node that missed a cluster-wide ``config set`` takes it later.

``roost ctl config set KEY VALUE`` in a cluster runs on every node (:mod:`roost.admin.fanout`)
and each node that applies it records the change in ``overrides-stamps.json`` in its data
directory: KEY -> the request's stamp (the asking node's clock and name) and VALUE as given,
or null for ``config unset``. A node that was down, or on the other side of a partition, has
an older record for that key, or none.

When a link comes up, each node sends its records to the other on the mesh channel
``config``. A node that receives a record newer than its own for a key (a later time; the
asking node's name breaks ties) applies it as ``config set``/``config unset`` would on the
spot (validated, persisted, reloaded; logged and audited) and records it, so it passes it on
at its next link. Nodes therefore converge on the latest cluster-wide value of every key:
last writer wins, per key, by the asking nodes' clocks. (Clocks further apart than the time
between two changes of one key can make the earlier change win; ``config status`` shows
the drift either way.)

What is not synchronised: changes made with ``--node`` (they are meant for those nodes; the
next cluster-wide change of the key overrides them), settings that name or place one node
(:data:`~roost.admin.reload.NODE_SETTINGS`), and the other configuration layers (files, the
environment, flags), which are each machine's own business. A record whose value this
node's schema refuses (an older roost) is logged and skipped.

Nodes sharing a data directory (``roost up --nodes N``) share the overrides and the records:
a node restarted there reads the current overrides at start and has nothing to take.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from roost.admin.commands import CommandError

if TYPE_CHECKING:
    from roost.cluster.mesh import Mesh
    from roost.cluster.mesh_types import Peer
    from roost.core.server import Server

log = logging.getLogger("roost.admin.config_sync")

CHANNEL: Final = "config"
STAMPS_FILE: Final = "overrides-stamps.json"


class Stamp(msgspec.Struct, array_like=True, frozen=True):
    """The last cluster-wide change of one key: when, by whom, to what (None: unset)."""

    time: float
    node: str
    value: str | None

    def newer_than(self, other: Stamp | None) -> bool:
        return other is None or (self.time, self.node) > (other.time, other.node)


class Stamps(msgspec.Struct, tag="stamps", array_like=True, frozen=True):
    entries: dict[str, Stamp]


def load(data_dir: Path) -> dict[str, Stamp]:
    """The records of ``data_dir`` ({} when there are none, or they cannot be read)."""
    path = data_dir / STAMPS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror)
        return {}
    try:
        return msgspec.json.decode(raw, type=dict[str, Stamp])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return {}


def record(data_dir: Path, key: str, stamp: Stamp) -> None:
    """Record the change of ``key`` (atomically; a write that fails is logged)."""
    path = data_dir / STAMPS_FILE
    stamps = load(data_dir)
    stamps[key] = stamp
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_bytes(json.dumps(msgspec.to_builtins(stamps), indent=1).encode())
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("cannot record the change of %s in %s: %s", key, path, exc.strerror)
        with contextlib.suppress(OSError):
            temporary.unlink()


class ConfigSync:
    """The ``config`` mesh channel of one clustered node (see the module docstring)."""

    def __init__(self, server: Server, mesh: Mesh) -> None:
        self._server = server
        self._mesh = mesh
        self._waiters: list[asyncio.Future[None]] = []
        self.taken = 0  # changes taken from other nodes
        mesh.subscribe(CHANNEL, self._receive, type=Stamps)
        mesh.on_peer_up(self._peer_up)

    def close(self) -> None:
        self._mesh.unsubscribe(CHANNEL)

    def changed(self) -> asyncio.Future[None]:
        """A future done once the next records received have been handled (tests, tools)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def statistics(self) -> dict[str, int]:
        return {"taken": self.taken, "records": len(load(self._server.config.data_dir))}

    def _peer_up(self, peer: Peer) -> None:
        stamps = load(self._server.config.data_dir)
        if stamps:
            self._mesh.send(peer.name, CHANNEL, Stamps(stamps))

    def _receive(self, node: str, message: Stamps) -> None:
        self._server.spawn(self._take(node, message.entries))

    async def _take(self, node: str, entries: dict[str, Stamp]) -> None:
        from roost.admin.config_commands import change_override
        from roost.admin.reload import NODE_SETTINGS, lock
        from roost.config.pipeline import SCHEMA, convert, display

        data_dir = self._server.config.data_dir
        try:
            async with lock(self._server):
                ours = load(data_dir)
                for key, stamp in sorted(entries.items()):
                    setting = SCHEMA.get(key)
                    if setting is None or key in NODE_SETTINGS:
                        continue
                    if not stamp.newer_than(ours.get(key)):
                        continue
                    try:
                        value = None if stamp.value is None else convert(setting, stamp.value)
                        report = change_override(self._server, key, value)
                    except (ValueError, CommandError) as exc:
                        log.warning("not taking %s = %s from %s: %s", key, stamp.value, node, exc)
                        continue
                    record(data_dir, key, stamp)
                    self.taken += 1
                    shown = None if value is None else display(setting, value)  # secrets hidden
                    log.info(
                        "took %s %s from %s (set on %s; config version %d)",
                        key,
                        "unset" if shown is None else f"= {shown}",
                        node,
                        stamp.node,
                        report.version,
                    )
                    self._server.control.audit.record(
                        None, "sync", key=key, value=shown, from_node=node, set_on=stamp.node
                    )
        finally:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
