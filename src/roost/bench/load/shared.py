"""What the clients of a run share: the scenario interface, batched writes, settings, errors.

:class:`Outbox` batches writes per event-loop turn: a client that sends several stanzas in one
turn costs one system call (and one TLS record), and a burst of sends across clients is
written after the turn's reads, not interleaved with them.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roost.bench.load.client import Client


class LoginError(Exception):
    """A client could not log in (or register): in which phase, and why."""

    def __init__(self, phase: str, reason: str) -> None:
        super().__init__(f"{phase}: {reason}")
        self.phase = phase
        self.reason = reason


class Handler:
    """What a scenario is told about an online client. The defaults ignore everything."""

    def message(self, client: Client, element: bytes, now_ns: int) -> None:
        pass

    def presence(self, client: Client, element: bytes, now_ns: int) -> None:
        pass

    def iq(self, client: Client, element: bytes) -> None:
        """An IQ result or error, or a roster push (requests are answered by the client
        itself, pushes included)."""

    def closed(self, client: Client, reason: str) -> None:
        pass


class Outbox:
    """Flushes every client written to during this event-loop turn, once (see above)."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Client] = []
        self._scheduled = False

    def add(self, client: Client) -> None:
        self._dirty.append(client)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty = self._dirty
        self._dirty = []
        for client in dirty:
            client.flush()


@dataclass(slots=True)
class Settings:
    """What every client of a run shares."""

    domain: str
    outbox: Outbox
    starttls: bool = False
    direct_tls: bool = False
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None  # for certificate verification
    mechanism: str = "auto"
    resource: str = "load"
    stream_management: bool = False


def describe(exc: BaseException) -> str:
    """A short reason for a socket error: ``Connection refused`` rather than its repr."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
