"""``roost up --nodes N``: N node processes on one machine, one cluster, shared client ports.

CPython runs Python on one core per process, so roost uses several cores the way it uses
several machines: as nodes of a cluster. The supervisor prepares what the nodes share (the
cluster CA and one certificate per node, in the data directory), picks the ports (the client
ports are shared by every node through ``SO_REUSEPORT``, so the kernel spreads connections
over them; each node has its own mesh port), starts the nodes as ``roost up`` child processes
configured through the environment (``ROOST_CLUSTER__NODE`` and friends), prints one ready
line when all of them are ready, restarts a node that dies (with a growing delay, reset after
it stays up for a while), and on SIGINT/SIGTERM stops them all cleanly.

The nodes share the embedded SQLite store of the data directory (WAL mode allows several
writer processes) unless ``storage.url`` points them at PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from roost.cluster.ca import CAError, cluster_dir, init_cluster, issue

log = logging.getLogger(__name__)

READY: Final = "roost ready"
STABLE_AFTER: Final = 30.0  # seconds up after which a node's restart delay starts over
MAX_DELAY: Final = 10.0


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def prepare_credentials(data_dir: Path, names: list[str]) -> None:
    """A cluster CA (if there is none) and a certificate for every node that lacks one."""
    directory = cluster_dir(data_dir)
    if not (directory / "ca.pem").exists():
        init_cluster(data_dir, names[0])
    for name in names:
        if not (directory / "nodes" / name / "node.pem").exists():
            try:
                issue(data_dir, name)
            except CAError as exc:
                raise SystemExit(f"roost: cannot issue a certificate for {name}: {exc}") from None


@dataclass
class Child:
    name: str
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    def __init__(
        self,
        argv: list[str],
        *,
        nodes: int,
        data_dir: Path,
        host: str,
        c2s_port: int,
        c2s_tls_port: int,
        cluster_host: str = "127.0.0.1",
        cluster_port: int = 0,
        websocket_port: int = -1,
        websocket_part: Callable[[int], str] | None = None,
    ) -> None:
        self.argv = argv
        self.names = [f"node{i + 1}" for i in range(nodes)]
        self.data_dir = data_dir
        self.host = host
        self.c2s_port = c2s_port or free_port(host)
        self.c2s_tls_port = c2s_tls_port if c2s_tls_port < 0 else c2s_tls_port or free_port(host)
        # Shared by the nodes like the client ports (fixed here when a free one is asked for).
        self.websocket_port = (
            websocket_port if websocket_port < 0 else websocket_port or free_port(host)
        )
        self._websocket_part = websocket_part
        base = cluster_port
        self.cluster_ports = [base + i if base else free_port(cluster_host) for i in range(nodes)]
        self.cluster_host = cluster_host
        self.children: list[Child] = []
        self._stopping = False

    def _env(self, index: int) -> dict[str, str]:
        name = self.names[index]
        env = dict(os.environ)
        env.update(
            {
                "ROOST_CLUSTER__NODE": name,
                "ROOST_CLUSTER__LISTEN": f"{self.cluster_host}:{self.cluster_ports[index]}",
                "ROOST_CLUSTER__JOIN": ",".join(
                    f"{self.cluster_host}:{port}"
                    for i, port in enumerate(self.cluster_ports)
                    if i != index
                ),
                "ROOST_ADMIN__SOCKET": f"ctl-{name}.sock",
                "ROOST_C2S__REUSE_PORT": "true",
                "ROOST_C2S__PORT": str(self.c2s_port),
                "ROOST_C2S__TLS_PORT": str(self.c2s_tls_port),
                "ROOST_WEBSOCKET__PORT": str(self.websocket_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    async def run(self) -> int:
        prepare_credentials(self.data_dir, self.names)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.children = [Child(name, self._env(i)) for i, name in enumerate(self.names)]
        watchers = [loop.create_task(self._watch(child)) for child in self.children]
        ready = loop.create_task(self._all_ready())
        stopped = loop.create_task(stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and not stopped.done():
            tls = (
                f", c2s_tls {self.host}:{self.c2s_tls_port} (direct TLS)"
                if (self.c2s_tls_port >= 0)
                else ""
            )
            if self.websocket_port >= 0 and self._websocket_part is not None:
                tls += ", " + self._websocket_part(self.websocket_port)
            print(
                f"{READY}: {len(self.children)} nodes on c2s {self.host}:{self.c2s_port} "
                f"(STARTTLS){tls}; data in {self.data_dir}; nodes "
                + ", ".join(
                    f"{c.name} (pid {c.process.pid if c.process else '?'})" for c in self.children
                ),
                flush=True,
            )
            await stopped
        ready.cancel()
        self._stopping = True
        await self._terminate()
        for watcher in watchers:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return 0

    async def _all_ready(self) -> None:
        for child in self.children:
            await child.ready.wait()

    async def _watch(self, child: Child) -> None:
        delay = 0.5
        while not self._stopping:
            child.ready.clear()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "roost",
                "up",
                *self.argv,
                env=child.env,
                stdout=asyncio.subprocess.PIPE,
            )
            child.process = process
            child.started_at = time.monotonic()
            assert process.stdout is not None
            async for line in process.stdout:
                text = line.decode(errors="replace").rstrip()
                if text.startswith(READY):
                    child.ready.set()
                    log.info("%s ready (pid %d)", child.name, process.pid)
                elif text:
                    print(f"[{child.name}] {text}", flush=True)
            code = await process.wait()
            if self._stopping:
                return
            up_for = time.monotonic() - child.started_at
            if up_for > STABLE_AFTER:
                delay = 0.5
            log.warning(
                "%s (pid %d) exited with %d after %.1fs; restarting in %.1fs",
                child.name,
                process.pid,
                code,
                up_for,
                delay,
            )
            child.restarts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

    async def _terminate(self) -> None:
        processes = [c.process for c in self.children if c.process is not None]
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
