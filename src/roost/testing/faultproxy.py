"""A TCP proxy for fault-injection tests: a real link to a real dependency that fails on cue.

Tests of how roost behaves when a dependency misbehaves (the storage gate opening when
PostgreSQL stalls, say) need the dependency to misbehave the way it does in production: a
link that goes quiet with its connections still open, one that gets slow, connections that
are torn down. :class:`FaultProxy` stands between roost and the dependency: it listens on
an ephemeral loopback port, and every connection it accepts it forwards to ``target``. The
test points roost at :attr:`FaultProxy.address` and switches the proxy's behaviour while
traffic flows:

=================  ==========================================================================
``pass_through()``  bytes are forwarded as they come (the initial mode)
``delay(seconds)``  each chunk is held ``seconds`` before it is forwarded, both ways
``stall()``         bytes are held both ways and connections stay open: a hung database, a
                    black-holed route. New connections are accepted and held too.
``reset()``         every connection is aborted with a TCP reset, and new ones are reset as
                    soon as they are accepted: a database that restarts, a firewall that
                    drops the flows
``heal()``          back to pass-through; held bytes are forwarded, in order
=================  ==========================================================================

Nothing is lost while stalled: bytes read during a stall are forwarded, in order, when the
proxy heals, as TCP would deliver them after an outage that its retransmissions outlived.
:meth:`FaultProxy.statistics` tells a test what went through; :meth:`FaultProxy.wait_for`
waits until a condition on it holds (a connection made, bytes held), on events rather than
on time.

::

    async with FaultProxy(("127.0.0.1", 5432)) as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/roost"
        ...
        proxy.stall()
        ...
        proxy.heal()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Self

__all__ = ["FaultProxy", "Mode", "ProxyStatistics"]

CHUNK = 65536


class Mode(Enum):
    PASS = "pass"
    DELAY = "delay"
    STALL = "stall"
    RESET = "reset"


@dataclass(slots=True, frozen=True)
class ProxyStatistics:
    """A snapshot of a proxy: its mode and what went through it."""

    mode: str
    latency: float  # seconds each chunk is held in ``delay`` mode
    open: int  # connections open now
    accepted: int  # connections accepted and forwarded
    refused: int  # connections reset on arrival (``reset`` mode, or no target)
    reset: int  # open connections aborted by ``reset()``
    upstream: int  # bytes forwarded to the target
    downstream: int  # bytes forwarded back to clients
    held: int  # bytes read and not yet forwarded (stalled or delayed)


class _Link:
    """One proxied connection: the client's side, the target's side, the task serving them."""

    __slots__ = ("aborted", "client", "task", "upstream")

    def __init__(self, client: asyncio.StreamWriter, task: asyncio.Task[None]) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task = task
        self.aborted = False

    def abort(self) -> None:
        """Reset both sides and stop serving them (a pump may be holding bytes)."""
        self.drop(_abort)
        self.aborted = True
        self.task.cancel()

    def drop(self, how: Callable[[asyncio.StreamWriter], None]) -> None:
        how(self.client)
        if self.upstream is not None:
            how(self.upstream)


class FaultProxy:
    """A TCP proxy to ``target`` whose faults are switched at run time (module docstring)."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self._server: asyncio.Server | None = None
        self._port = 0
        self._mode = Mode.PASS
        self._latency = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._switched = asyncio.Event()  # set (then replaced) on every change of mode
        self._links: set[_Link] = set()
        self._changed = asyncio.Event()  # set (then replaced) on every change of statistics
        self._accepted = self._refused = self._reset = 0
        self._upstream = self._downstream = self._held = 0

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening; abort every connection and wait for their tasks to end."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        links = list(self._links)
        for link in links:
            link.abort()
        for link in links:
            await link.task
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self._port)

    @property
    def mode(self) -> Mode:
        return self._mode

    # -- faults ------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._switch(Mode.PASS, 0.0)

    def delay(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before forwarding it, both ways."""
        if seconds < 0:
            raise ValueError(f"a delay cannot be negative: {seconds}")
        self._switch(Mode.DELAY, seconds)

    def stall(self) -> None:
        """Hold every byte both ways; keep connections open and accept new ones."""
        self._switch(Mode.STALL, 0.0)

    def reset(self) -> None:
        """Abort every connection with a reset, and reset new ones on arrival, until healed."""
        self._switch(Mode.RESET, 0.0)
        for link in list(self._links):
            link.abort()
            self._reset += 1
        self._notify()

    def heal(self) -> None:
        """Back to pass-through; what a stall held is forwarded."""
        self.pass_through()

    def _switch(self, mode: Mode, latency: float) -> None:
        self._mode = mode
        self._latency = latency
        if mode is Mode.STALL or mode is Mode.RESET:
            self._flowing.clear()
        else:
            self._flowing.set()
        self._switched.set()
        self._switched = asyncio.Event()
        self._notify()

    # -- introspection -----------------------------------------------------------------------

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(
            mode=self._mode.value,
            latency=self._latency,
            open=len(self._links),
            accepted=self._accepted,
            refused=self._refused,
            reset=self._reset,
            upstream=self._upstream,
            downstream=self._downstream,
            held=self._held,
        )

    async def wait_for(
        self, condition: Callable[[ProxyStatistics], bool], limit: float = 10.0
    ) -> ProxyStatistics:
        """Wait until ``condition(self.statistics())`` holds; the statistics that met it."""
        async with asyncio.timeout(limit):
            while not condition(snapshot := self.statistics()):
                await self._changed.wait()
        return snapshot

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        s = self.statistics()
        latency = f" {s.latency:g}s" if s.mode == Mode.DELAY.value else ""
        return (
            f"<FaultProxy :{self._port} -> {self.target[0]}:{self.target[1]} {s.mode}{latency}"
            f" open={s.open} up={s.upstream} down={s.downstream} held={s.held}>"
        )

    # -- forwarding --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._mode is Mode.RESET or self._server is None:
            self._refused += 1
            _abort(writer)
            self._notify()
            return
        link = _Link(writer, task)
        self._links.add(link)
        self._accepted += 1
        self._notify()
        try:
            await self._forward(link, reader)
        except asyncio.CancelledError:
            if not link.aborted:
                raise
            task.uncancel()  # our own doing (reset or close): the connection is done with
        finally:
            self._links.discard(link)
            link.drop(_abort if link.aborted else _close)
            self._notify()

    async def _forward(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            up_reader, link.upstream = await asyncio.open_connection(*self.target)
        except OSError:
            self._refused += 1
            link.drop(_abort)  # as if the target had reset it
            return
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(reader, link.upstream, upstream=True))
                group.create_task(self._pump(up_reader, link.client, upstream=False))
        except* OSError:
            pass  # a side went away: both are closed by the caller

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        while data := await source.read(CHUNK):
            self._held += len(data)
            self._notify()
            try:
                await self._hold(asyncio.get_running_loop().time())
            finally:
                self._held -= len(data)
            sink.write(data)
            await sink.drain()
            if upstream:
                self._upstream += len(data)
            else:
                self._downstream += len(data)
            self._notify()
        if sink.can_write_eof():
            sink.write_eof()  # a half-close is forwarded as one

    async def _hold(self, arrived: float) -> None:
        """Until a chunk that arrived at ``arrived`` may go: flowing, and its delay over.

        The delay is the one in force now, so that ``heal()`` releases a delayed chunk at
        once and a longer delay holds it longer.
        """
        loop = asyncio.get_running_loop()
        while True:
            await self._flowing.wait()
            remaining = arrived + self._latency - loop.time()
            if remaining <= 0:
                return
            switched = self._switched
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # the latency being injected
                    await switched.wait()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (RST) rather than a FIN: SO_LINGER on, with a zero timeout."""
    transport = writer.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
