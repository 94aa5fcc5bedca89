"""A cluster of real ``roost up`` processes for tests: real TLS links, ``kill -9``, restarts.

Every node is a child process sharing one data directory (and its SQLite store), with its own
client ports, mesh port and control socket (``ctl-<node>.sock``). Tests reach inside a node
through the control channel: :meth:`NodeProcess.eval` runs code in the node's event loop
(the semantics of ``roost shell``), and :meth:`NodeProcess.wait_for` waits, inside the node,
for a condition to hold, woken by the node's own membership changes rather than by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.admin.client import AsyncControlClient
from roost.c2s.tls import ensure_self_signed
from roost.testing.server import _cluster_credentials

_READY = re.compile(rb"roost ready: .* c2s [\d.]+:(\d+) \(STARTTLS\), c2s_tls [\d.]+:(\d+)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NodeProcess:
    name: str
    data_dir: Path
    cluster_port: int
    join: list[str]
    env: dict[str, str]
    host: str = "127.0.0.1"
    port: int = 0
    tls_port: int = 0
    process: asyncio.subprocess.Process | None = None
    _control: AsyncControlClient | None = None

    @property
    def cert(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        env = {
            **os.environ,
            **self.env,
            "ROOST_CLUSTER__NODE": self.name,
            "ROOST_CLUSTER__LISTEN": f"127.0.0.1:{self.cluster_port}",
            "ROOST_CLUSTER__JOIN": ",".join(self.join),
            "ROOST_ADMIN__SOCKET": f"ctl-{self.name}.sock",
            "PYTHONUNBUFFERED": "1",
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "roost",
            "up",
            "--data-dir",
            str(self.data_dir),
            "--c2s-port",
            str(self.port or 0),
            "--c2s-tls-port",
            str(self.tls_port or 0),
            "--websocket-port",
            "-1",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        match = _READY.search(line)
        if not match:
            raise RuntimeError(f"{self.name} did not start: {line!r}")
        self.port, self.tls_port = int(match.group(1)), int(match.group(2))

    async def control(self) -> AsyncControlClient:
        if self._control is None:
            self._control = await AsyncControlClient.connect(
                self.data_dir / f"ctl-{self.name}.sock"
            )
        return self._control

    async def eval(self, code: str) -> Any:
        """Run ``code`` in the node (top-level await allowed); its JSON-able result."""
        return await (await self.control()).eval(code)

    async def wait_for(self, condition: str, limit: float = 15.0) -> None:
        """Wait inside the node until the expression ``condition`` is true, re-checking it at
        every change of the cluster view (``server`` is in scope)."""
        await self.eval(
            "import asyncio as _a\n"
            "async def _until():\n"
            f"    while not ({condition}):\n"
            "        await server.cluster.registry.changed()\n"
            f"await _a.wait_for(_until(), {limit})\n"
        )

    async def kill(self) -> None:
        """``kill -9``: no goodbye, no flush."""
        await self._drop_control()
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        await self._drop_control()
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def _drop_control(self) -> None:
        if self._control is not None:
            with contextlib.suppress(Exception):
                await self._control.close()
            self._control = None


@asynccontextmanager
async def process_cluster(
    data_dir: Path, nodes: int = 3, *, env: dict[str, str] | None = None
) -> AsyncIterator[list[NodeProcess]]:
    """Start ``nodes`` node processes of one cluster; stop them all on exit."""
    names = [f"node{i + 1}" for i in range(nodes)]
    _cluster_credentials(data_dir, names)
    ensure_self_signed(data_dir / "tls", "localhost")  # before the nodes race to make one
    ports = [_free_port() for _ in names]
    seeds = [f"127.0.0.1:{ports[0]}"]
    settings = {"ROOST_CLUSTER__HEARTBEAT_TIMEOUT": "2", **(env or {})}
    started = [
        NodeProcess(name, data_dir, port, seeds if i else [], settings)
        for i, (name, port) in enumerate(zip(names, ports, strict=True))
    ]
    try:
        for node in started:
            await node.start()
        for node in started:
            await node.wait_for(f"len(server.cluster.mesh.peers()) == {nodes - 1}")
        yield started
    finally:
        for node in started:
            await node.stop()
