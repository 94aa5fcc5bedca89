"""``roost ctl --remote HOST:PORT``: the control protocol over mutual TLS, from another machine.

Off unless ``admin.listen`` is set (``HOST:PORT``; port 0 picks one). The listener is the
control channel (:mod:`roost.admin.channel`) on a TCP port instead of the unix socket, with
the cluster's certificates instead of unix credentials:

* TLS 1.3 only. The node presents its cluster certificate (so a clustered node, with
  ``cluster.node``); the client must present a certificate signed by the cluster CA that
  names an *administrator* (``urn:roost:admin:NAME``, made by ``roost cluster issue --admin
  NAME``). A node certificate is refused: a node's key administers its peers only through
  the mesh, and only with the commands that allow it.
* The client checks the other way round that it reached a node of its cluster: the node's
  certificate must be signed by the same CA and name a node. Host names are not checked, as
  on the mesh: nodes are named by their certificates.
* The shell and commands that evaluate code (``bench``) are refused (``local-only``): they
  stay with whoever can log in to the node's machine. Everything else, ``--node`` and
  ``--all`` included, works as over the socket.
* The audit log names the administrator and their address instead of a uid and pid.

There is no revocation list: an administrator certificate is valid until it expires (825
days). To shut someone out sooner, turn ``admin.listen`` off, or re-key the cluster.

The client directory is what ``roost cluster issue --admin NAME`` writes: ``ca.pem``,
``admin.pem`` and ``admin-key.pem``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509

from roost.admin import protocol
from roost.admin.client import ControlClient, NodeUnreachable
from roost.cluster.ca import Identity, identity_of
from roost.cluster.mesh_tls import describe_tls_error, server_context

if TYPE_CHECKING:
    from roost.admin.channel import ControlChannel, Peer
    from roost.cluster.ca import ClusterFiles

log = logging.getLogger("roost.admin.remote")

HANDSHAKE_TIMEOUT: Final = 10.0


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Identity | None:
    """Who the certificate presented on a TLS connection names (None: nobody we know)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    try:
        return identity_of(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


class RemoteListener:
    """The TLS listener of one node (see the module docstring)."""

    def __init__(self, channel: ControlChannel, server: asyncio.Server) -> None:
        self._channel = channel
        self._server = server
        host, port = server.sockets[0].getsockname()[:2]
        self.address: tuple[str, int] = (host, int(port))
        self.refused = 0
        self.accepted = 0

    @classmethod
    async def start(
        cls, channel: ControlChannel, address: tuple[str, int], files: ClusterFiles
    ) -> RemoteListener:
        context = server_context(files)
        listener: RemoteListener | None = None

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert listener is not None
            await listener._accept(reader, writer)

        server = await asyncio.start_server(
            accept,
            *address,
            ssl=context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            limit=protocol.MAX_MESSAGE,
        )
        listener = cls(channel, server)
        log.info("remote administration listening on %s:%d (mutual TLS)", *listener.address)
        return listener

    def close(self) -> None:
        self._server.close()

    def statistics(self) -> dict[str, int]:
        return {"accepted": self.accepted, "refused": self.refused}

    def __repr__(self) -> str:
        return f"<RemoteListener {self.address[0]}:{self.address[1]} accepted={self.accepted}>"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from roost.admin.channel import Peer

        identity = peer_identity(writer.get_extra_info("ssl_object"))
        peername = writer.get_extra_info("peername")
        where = f"{peername[0]}:{peername[1]}" if peername else "?"
        if identity is None or identity.kind != "admin":
            self.refused += 1
            who = "no identity" if identity is None else f"{identity.kind} {identity.name!r}"
            log.warning(
                "remote administration: refused %s from %s: not an administrator", who, where
            )
            writer.write(
                protocol.encode(
                    protocol.error(
                        None, "forbidden", "an administrator certificate of this cluster is needed"
                    )
                )
            )
            writer.close()
            return
        self.accepted += 1
        peer: Peer = Peer(-1, -1, -1, admin=identity.name, address=where)
        log.info("remote administration: %s connected from %s", identity.name, where)
        await self._channel.serve(reader, writer, peer, remote=True)


@dataclass(frozen=True, slots=True)
class AdminFiles:
    """An administrator's credentials: the cluster CA, their certificate and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> AdminFiles:
        return cls(directory / "ca.pem", directory / "admin.pem", directory / "admin-key.pem")

    def missing(self) -> list[Path]:
        return [path for path in (self.ca, self.cert, self.key) if not path.exists()]


def client_context(files: AdminFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # the node is named by its certificate, checked below
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(files.ca))
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


def connect(address: tuple[str, int], files: AdminFiles, timeout: float | None) -> ControlClient:
    """A blocking control connection to the node at ``address``. Raises NodeUnreachable."""
    label = f"{address[0]}:{address[1]}"
    try:
        context = client_context(files)
    except (OSError, ssl.SSLError) as exc:
        raise NodeUnreachable(f"cannot use the credentials {files.cert}: {exc}") from None
    try:
        raw = socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        raise NodeUnreachable(f"cannot reach {label}: {exc.strerror or exc}") from None
    try:
        sock = context.wrap_socket(raw)
    except ssl.SSLError as exc:
        raw.close()
        raise NodeUnreachable(f"TLS with {label} failed: {describe_tls_error(exc)}") from None
    except OSError as exc:
        raw.close()
        raise NodeUnreachable(f"TLS with {label} failed: {exc.strerror or exc}") from None
    identity = peer_identity(sock)
    if identity is None or identity.kind != "node":
        sock.close()
        raise NodeUnreachable(f"{label} is not a node of this cluster (its certificate names none)")
    return ControlClient(sock, f"{label} (node {identity.name})")
