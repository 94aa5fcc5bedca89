"""The mesh's plain data: peers, statistics, addresses (see :mod:`roost.cluster.mesh`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

Address = tuple[str, int]
DEFAULT_PORT = 7400


@dataclass(frozen=True, slots=True)
class Peer:
    """A linked node, as told to ``peer_up``/``peer_down`` callbacks and by ``peers()``."""

    name: str
    incarnation: int  # changes when the node's process restarts
    version: int  # the protocol version of the link
    capabilities: frozenset[str]  # those both nodes have
    outgoing: bool  # whether we dialled the link


@dataclass(slots=True)
class LinkStatistics:
    incarnation: int
    outgoing: bool
    version: int
    up_for: float  # seconds
    frames_in: int
    frames_out: int
    bytes_in: int  # on the wire, TLS included
    bytes_out: int
    buffered: int  # bytes waiting to be written
    rtt: float | None  # the last heartbeat's round trip, seconds


@dataclass(slots=True)
class MeshStatistics:
    node: str
    incarnation: int
    members: int = 0  # known nodes other than this one, linked or not
    links: dict[str, LinkStatistics] = field(default_factory=dict)
    links_up: int = 0  # links established since start
    links_down: int = 0
    refused: int = 0  # links refused (TLS, identity, version, protocol during the handshake)
    protocol_errors: int = 0
    heartbeat_timeouts: int = 0
    slow_peer_disconnects: int = 0
    dial_failures: int = 0
    unrouted: int = 0  # app messages for a channel nobody here subscribed to


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``host:port``, ``[v6]:port`` or a bare host, as given to ``--join``."""
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {text!r}: expected HOST:PORT")
    return host, int(port)


def format_address(address: Address | None) -> str:
    if address is None:
        return "an unknown address"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def addresses(texts: Sequence[str]) -> list[Address]:
    """Parse ``--join`` values (see :func:`parse_address`)."""
    return [parse_address(text) for text in texts]
