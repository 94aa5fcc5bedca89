"""One link of the mesh: a TCP connection, TLS on memory BIOs, and the framing core.

A :class:`Link` is an asyncio protocol on a plain TCP transport. TLS runs in an
:class:`ssl.SSLObject` over memory BIOs rather than in asyncio's TLS transport, for control:
a failed handshake is an exception here, so a refused peer is logged with its reason (asyncio's
server drops those silently), and the bytes waiting for a slow peer are exactly the plain
transport's buffer plus our queue, which is what the write bound counts.

The link knows the wire and the handshake order; the :class:`~roost.cluster.mesh.Mesh` decides
what the link means (which link of a pair survives, who is a member, who gets a message).

Lifecycle: TLS handshake → certificate names a node (else refused) → hellos both ways →
``welcome`` from the arbiter (the node whose name sorts first) → established → closed. A link
is closed exactly once, by :meth:`Link.close` (polite: queued frames, a ``bye`` with the reason,
TLS close_notify) or :meth:`Link.abort` (at once: a dead, slow or hostile peer), or by the peer;
either way the mesh hears of it at once through ``Mesh._link_closed``, not later when asyncio
reports the socket gone.

Writes are queued and flushed once per event-loop turn, so a burst of frames costs one TLS
record run and one socket write.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from roost.cluster.ca import node_name_of_der
from roost.cluster.framing import (
    App,
    Bye,
    Connection,
    Frame,
    Hello,
    LocalProtocolError,
    Members,
    Ping,
    Pong,
    RemoteProtocolError,
    State,
    UnexpectedFrame,
    Welcome,
)
from roost.cluster.mesh_tls import describe_tls_error

if TYPE_CHECKING:
    from roost.cluster.mesh import Mesh

log = logging.getLogger("roost.cluster.mesh")

_READ_CHUNK = 64 * 1024
_MAX_REASON = 500  # a bye's reason is for logs; keep it well under any frame limit
# The arbiter's answer to a second connection between the same two nodes: routine when both
# dial at once, so logged quietly.
DUPLICATE = "duplicate link"


class Link(asyncio.Protocol):
    """See the module docstring."""

    def __init__(
        self,
        mesh: Mesh,
        context: ssl.SSLContext,
        *,
        outgoing: bool,
        expect: str | None = None,
        address: tuple[str, int] | None = None,
    ) -> None:
        self.mesh = mesh
        self.outgoing = outgoing
        self.expect = expect  # the node we dialled, when we know its name
        self.address = address  # where we dialled
        self.conn = Connection(mesh._hello, max_frame_size=mesh.max_frame_size)
        self._context = context
        self._tls: ssl.SSLObject | None = None
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self.transport: asyncio.Transport | None = None
        self.secure = False  # the TLS handshake is done
        self.cert_name: str | None = None  # the node the peer's certificate names
        self.peer: str | None = None  # the node the peer's hello names (== cert_name)
        self.established = False
        self.closing = False
        self.reason: str | None = None
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.created_at = self.last_received = loop.time()
        self.established_at = 0.0
        self.handshake: asyncio.Future[bool] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_scheduled = False
        self.frames_in = self.frames_out = self.bytes_in = self.bytes_out = 0
        self.rtt: float | None = None

    def loop_time(self) -> float:
        return self._loop.time()

    # -- names for logs --

    @property
    def remote(self) -> str:
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if peer:
            return f"{peer[0]}:{peer[1]}"
        return f"{self.address[0]}:{self.address[1]}" if self.address else "?"

    @property
    def label(self) -> str:
        name = self.peer or self.cert_name or self.expect
        return f"{name!r} ({self.remote})" if name else self.remote

    @property
    def arbiter(self) -> bool:
        """Whether we decide for this pair of nodes (our name sorts first)."""
        return self.peer is not None and self.mesh.node < self.peer

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = transport  # type: ignore[assignment]
        if not self.mesh._link_opened(self):
            return
        self._tls = self._context.wrap_bio(
            self._tls_in, self._tls_out, server_side=not self.outgoing
        )
        if self.outgoing:
            self._handshake()  # the ClientHello

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_received = self._loop.time()
        self.bytes_in += len(data)
        self._tls_in.write(data)
        if not self.secure and not self._handshake():
            return
        plain, eof = self._decrypt()
        if plain and not self.closing:
            self._receive(plain)
        if eof:
            # After the frames that came before it, which may include a bye with the reason.
            self.close("the peer closed the TLS session", bye=False)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.reason = f"connection lost ({exc})" if exc else "connection closed by the peer"
            self.conn.close()
            self.mesh._link_closed(self)
        self._out.clear()
        self._out_size = 0
        if not self.handshake.done():
            self.handshake.set_result(False)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- TLS --

    def _handshake(self) -> bool:
        tls = self._tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._send_tls_out()
            return False
        except ssl.SSLError as exc:
            self._send_tls_out()  # the alert, so the peer learns why
            self.refuse(f"TLS handshake failed: {describe_tls_error(exc)}", bye=False)
            return False
        self._send_tls_out()
        self.secure = True
        der = tls.getpeercert(binary_form=True)
        name = node_name_of_der(der) if der else None
        if name is None:
            self.refuse("its certificate names no node")
            return False
        if self.expect is not None and name != self.expect:
            self.refuse(f"expected node {self.expect!r}, its certificate names {name!r}")
            return False
        self.cert_name = name
        self._write(self.conn.hello())
        return True

    def _decrypt(self) -> tuple[bytes, bool]:
        """The plaintext available, and whether the peer closed the TLS session."""
        tls = self._tls
        assert tls is not None
        chunks: list[bytes] = []
        eof = False
        try:
            while True:
                chunk = tls.read(_READ_CHUNK)
                if not chunk:  # the peer's close_notify
                    eof = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            eof = True
        except ssl.SSLError as exc:
            # After our side of a TLS 1.3 handshake, the peer may still reject our certificate
            # with an alert: that is where a refusal shows on the dialling side.
            what = "refused by the peer" if not self.established else "TLS failed"
            self._fail(f"{what}: {describe_tls_error(exc)}")
            return b"", False
        self._send_tls_out()
        return b"".join(chunks), eof

    def _send_tls_out(self) -> None:
        if self._tls_out.pending and self.transport is not None:
            data = self._tls_out.read()
            self.bytes_out += len(data)
            self.transport.write(data)

    # -- frames in --

    def _receive(self, data: bytes) -> None:
        try:
            frames = self.conn.receive_data(data)
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
            return
        for frame in frames:
            if self.closing:
                return
            self.frames_in += 1
            try:
                self._dispatch(frame)
            except RemoteProtocolError as exc:
                self._protocol_error(exc)
                return

    def _dispatch(self, frame: Frame) -> None:
        mesh = self.mesh
        if isinstance(frame, App):
            if not self.established:
                raise UnexpectedFrame("app frame before the link was accepted")
            mesh._deliver(self, frame)
        elif isinstance(frame, Ping):
            if self.conn.state is State.OPEN:
                self.send(Pong(frame.stamp))
        elif isinstance(frame, Pong):
            self.rtt = max(0.0, self._loop.time() - frame.stamp)
        elif isinstance(frame, Members):
            if not self.established:
                raise UnexpectedFrame("members frame before the link was accepted")
            mesh._members_received(self, frame)
        elif isinstance(frame, Hello):
            if frame.node != self.cert_name:
                self.refuse(
                    f"it says it is {frame.node!r} but its certificate names {self.cert_name!r}"
                )
                return
            self.peer = frame.node
            mesh._hello_received(self, frame)
        elif isinstance(frame, Welcome):
            if self.arbiter or self.established or self.peer is None:
                raise UnexpectedFrame("welcome from a node that does not decide for this link")
            mesh._establish(self)
        else:  # Bye
            reason = frame.reason[:_MAX_REASON]
            if self.established:
                self.close(f"closed by the peer: {reason}", bye=False)
            elif reason == DUPLICATE:
                self.close(f"not accepted by the peer: {reason}", bye=False)
            else:
                self.refuse(f"refused by the peer: {reason}", bye=False)

    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        self.mesh._stats.protocol_errors += 1
        if self.established:
            self._fail(f"protocol error: {exc}", bye_reason=f"protocol error: {exc}")
        else:
            self.refuse(f"protocol error: {exc}")

    # -- frames out --

    def send(self, frame: Frame) -> bool:
        """Queue ``frame``; False if the link is closing or the peer is too slow.

        Raises :class:`~roost.cluster.framing.LocalProtocolError` for a frame the protocol
        does not allow (an oversized message).
        """
        if self.closing or not self.secure:
            return False
        self._queue(self.conn.send(frame))
        self.frames_out += 1
        return not self.closing

    def _write(self, data: bytes) -> None:
        self._queue(data)

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)
        self._check_bound()

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.transport is None or self._tls is None:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            self._fail(f"TLS failed: {describe_tls_error(exc)}")
            return
        self._send_tls_out()
        self._check_bound()

    def _check_bound(self) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        waiting = self._out_size + transport.get_write_buffer_size()
        if waiting > self.mesh.max_buffer:
            # Dropped at once, not closed politely: what is queued would never drain.
            self.mesh._stats.slow_peer_disconnects += 1
            reason = (
                f"peer too slow: {waiting} bytes waiting, over the limit of {self.mesh.max_buffer}"
            )
            log.warning("closing the link to %s: %s", self.label, reason)
            self.abort(reason, logged=True)

    @property
    def buffered(self) -> int:
        transport = self.transport
        size = transport.get_write_buffer_size() if transport is not None else 0
        return self._out_size + size

    # -- closing --

    def refuse(self, reason: str, *, bye: bool = True) -> None:
        """Close a link that never became one, logging why (a warning: someone knocked)."""
        if self.closing:
            return
        self.mesh._stats.refused += 1
        log.warning("link %s %s refused: %s", self._direction, self.label, reason)
        self.close(reason, bye=bye, logged=True)

    @property
    def _direction(self) -> str:
        return "to" if self.outgoing else "from"

    def _fail(self, reason: str, *, bye_reason: str | None = None) -> None:
        if not self.established:
            self.refuse(reason, bye=bye_reason is not None)
            return
        log.warning("closing the link to %s: %s", self.label, reason)
        if bye_reason is not None:
            self.close(reason, bye_reason=bye_reason, logged=True)
        else:
            self.abort(reason, logged=True)

    def close(
        self,
        reason: str,
        *,
        bye: bool = True,
        bye_reason: str | None = None,
        logged: bool = False,
    ) -> None:
        """Close politely: what is queued, a bye saying ``reason``, then TLS close_notify."""
        if self.closing:
            return
        if bye and self.secure:
            try:
                self._out.append(self.conn.send(Bye((bye_reason or reason)[:_MAX_REASON])))
            except LocalProtocolError:
                pass  # a bye already went out
        self.flush()
        self._mark_closed(reason, logged)
        tls, transport = self._tls, self.transport
        if transport is None:
            return
        if tls is not None and self.secure:
            try:
                tls.unwrap()
            except ssl.SSLError:
                pass
            self._send_tls_out()
        transport.close()

    def abort(self, reason: str, *, logged: bool = False) -> None:
        """Drop the connection now, discarding what is queued."""
        if self.closing:
            return
        self._mark_closed(reason, logged)
        if self.transport is not None:
            self.transport.abort()

    def _mark_closed(self, reason: str, logged: bool) -> None:
        self.closing = True
        self.reason = reason
        self.conn.close()
        if not logged and not self.established:
            # An established link's end is logged by the mesh, as the peer going down.
            log.debug("link %s %s closed: %s", self._direction, self.label, reason)
        self.mesh._link_closed(self)
        if not self.handshake.done():
            self.handshake.set_result(False)

    def __repr__(self) -> str:
        state = "closing" if self.closing else "up" if self.established else "handshake"
        return f"<Link {'out' if self.outgoing else 'in'} {self.label} {state}>"
