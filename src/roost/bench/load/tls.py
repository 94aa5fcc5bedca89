"""Client-side TLS over memory BIOs, for STARTTLS and direct TLS alike.

:class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO` rather than an asyncio TLS transport:
STARTTLS becomes a mode switch of the same protocol object instead of a transport swap, and
ten thousand idle TLS clients do not each hold the transport's large read buffer (the state
per connection is OpenSSL's own, about twenty kilobytes).

Certificates are not verified unless asked for: servers under test usually have self-signed
ones. With verification the server's name is checked against the XMPP domain.
"""

from __future__ import annotations

import ssl
from typing import Final

_READ: Final = 64 * 1024


class TlsError(Exception):
    """TLS failed (the handshake, a certificate, a record); the message says how."""


def make_context(verify: bool, cafile: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if cafile:
            context.load_verify_locations(cafile)
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class TlsLayer:
    """One connection's TLS: bytes from the socket in, plaintext out, and the reverse.

    Every method returns (or leaves in :meth:`outgoing`) the bytes to write to the socket.
    """

    __slots__ = ("_in", "_out", "_ssl", "handshaking")

    def __init__(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._in, self._out, server_side=False, server_hostname=server_hostname
        )
        self.handshaking = True

    def handshake(self) -> bool:
        """Advance the handshake; True once it is complete."""
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise TlsError(f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}") from None
        self.handshaking = False
        return True

    def receive(self, data: bytes) -> tuple[bytes, bool]:
        """Decrypt: (plaintext, whether the peer closed TLS). Call after the handshake."""
        self._in.write(data)
        chunks: list[bytes] = []
        closed = False
        try:
            while True:
                chunk = self._ssl.read(_READ)
                if not chunk:
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            closed = True
        except ssl.SSLError as exc:
            raise TlsError(f"TLS error: {exc.reason or exc}") from None
        if not chunks:
            return b"", closed
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), closed

    def feed(self, data: bytes) -> None:
        """Bytes from the socket during the handshake."""
        self._in.write(data)

    def encrypt(self, data: bytes) -> bytes:
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            raise TlsError(f"TLS error: {exc.reason or exc}") from None
        return self._out.read()

    def outgoing(self) -> bytes:
        """Bytes TLS itself wants sent (handshake records, alerts)."""
        return self._out.read() if self._out.pending else b""

    def close(self) -> bytes:
        """Start closing TLS (close_notify); returns the bytes to send."""
        try:
            self._ssl.unwrap()
        except ssl.SSLError:
            pass
        return self.outgoing()
