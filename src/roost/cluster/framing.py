"""The wire protocol of node-to-node links, as a Sans-I/O core: bytes in, frames out.

:class:`Connection` does no I/O and keeps no time: the driver (:mod:`roost.cluster.mesh`) feeds
it what it read with :meth:`Connection.receive_data` and writes what :meth:`Connection.send`
returns. Everything about the bytes on the wire lives here, so it is tested without sockets.

Frame format. A frame is a 4-byte big-endian unsigned length ``N``, then ``N`` bytes of
MessagePack: an array whose first element is the frame type (a string tag) and whose other
elements are the frame's fields in order (msgspec ``array_like`` structs: compact, and no field
names on the wire). The types:

=========  ==========================================  ===========================================
tag        fields                                      meaning
=========  ==========================================  ===========================================
hello      node, version, incarnation, capabilities,   first frame each way (see below)
           min_version
welcome    (none)                                      the link is accepted (mesh handshake)
ping       stamp                                       heartbeat; answered by pong with the stamp
pong       stamp                                       heartbeat answer
members    [[name, host, port], ...]                   the cluster members the sender knows
app        channel, message                            a message for the channel's subscriber
bye        reason                                      the sender closes the link, and says why
=========  ==========================================  ===========================================

An ``app`` frame's message is any MessagePack value, kept undecoded here (``msgspec.Raw``):
the subscriber of the channel decodes it into its own type.

Handshake and versions. Each side sends ``hello`` first, without waiting for the other's (a
``bye`` may come instead, to refuse before saying hello); anything else first, or a second
hello, is a protocol error. ``version`` is the newest protocol version the sender speaks and
``min_version`` the oldest. The link speaks the newest version both speak, ``min(ours,
theirs)``, provided neither side's ``min_version`` is above it; otherwise the peer is refused
(:class:`VersionMismatch`, whose message says both ranges, for the logs of both sides). So an
older or newer peer is tolerated as long as the ranges overlap, which a release keeps by
raising ``min_version`` only after every node speaks the newer version. ``capabilities`` are
strings for optional features; the link has those both sides list. A frame type or field that
depends on a capability or a newer version is only sent on links that have it.

Evolution within a version: decoders ignore trailing array elements they do not know, so a
field may be added at the end of a frame (with a default) without a new version. A new frame
type needs a new version or a capability: an unknown type is a protocol error.

Errors. :class:`RemoteProtocolError` (the peer broke the protocol: the link must be closed,
with the error's message as the logged reason) and :class:`LocalProtocolError` (we asked to
send something the protocol forbids, a bug or an oversized message), both
:class:`ProtocolError`; msgspec's own exceptions never escape. Oversized frames are refused from
their length alone, before any byte of the payload is buffered: the maximum frame size bounds
the memory a peer can make a link hold.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
HEADER_SIZE = 4
_MAX_LENGTH = 2**32 - 1


# -- frames -------------------------------------------------------------------------------------


class Hello(msgspec.Struct, tag="hello", array_like=True, frozen=True):
    node: str
    version: int
    incarnation: int
    capabilities: tuple[str, ...] = ()
    min_version: int | None = None  # absent: only ``version``


class Welcome(msgspec.Struct, tag="welcome", array_like=True, frozen=True):
    pass


class Ping(msgspec.Struct, tag="ping", array_like=True, frozen=True):
    stamp: float  # the sender's clock, echoed back: the round trip needs no state


class Pong(msgspec.Struct, tag="pong", array_like=True, frozen=True):
    stamp: float


class Member(msgspec.Struct, array_like=True, frozen=True):
    name: str
    host: str
    port: int


class Members(msgspec.Struct, tag="members", array_like=True, frozen=True):
    members: tuple[Member, ...]


class App(msgspec.Struct, tag="app", array_like=True, frozen=True):
    channel: str
    message: msgspec.Raw


class Bye(msgspec.Struct, tag="bye", array_like=True, frozen=True):
    reason: str


Frame = Hello | Welcome | Ping | Pong | Members | App | Bye

FRAME_TYPES: frozenset[str] = frozenset(
    str(cls.__struct_config__.tag) for cls in (Hello, Welcome, Ping, Pong, Members, App, Bye)
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)


# -- errors -------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """The link protocol was broken; ``str(error)`` is the reason, fit for a log line."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow: close the link."""


class FrameTooLarge(RemoteProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


class CorruptFrame(RemoteProtocolError):
    """The payload is not MessagePack, or not the shape its frame type requires."""


class UnknownFrameType(RemoteProtocolError):
    def __init__(self, frame_type: str) -> None:
        super().__init__(f"unknown frame type {frame_type!r}")
        self.frame_type = frame_type


class UnexpectedFrame(RemoteProtocolError):
    """A valid frame at the wrong time (not hello first, a second hello...)."""


class VersionMismatch(RemoteProtocolError):
    """The peer speaks no protocol version we speak."""


# -- messages -----------------------------------------------------------------------------------


def encode_message(message: object) -> msgspec.Raw:
    """Encode an application message once, to send it in any number of ``app`` frames.

    Raises :class:`LocalProtocolError` for what MessagePack cannot carry.
    """
    try:
        return msgspec.Raw(_encoder.encode(message))
    except (TypeError, ValueError, OverflowError, msgspec.MsgspecError) as exc:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from None


# -- the connection -----------------------------------------------------------------------------


class State(enum.Enum):
    HANDSHAKE = "handshake"  # hellos not yet exchanged both ways
    OPEN = "open"
    CLOSED = "closed"  # a bye was sent or received, or the peer broke the protocol


class Connection:
    """One side of a link. See the module docstring for the protocol it enforces."""

    __slots__ = (
        "_buffer",
        "_bye_sent",
        "_hello_sent",
        "capabilities",
        "local",
        "max_frame_size",
        "peer",
        "state",
        "version",
    )

    def __init__(self, local: Hello, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= _MAX_LENGTH:
            raise ValueError(f"max_frame_size must be within 1..{_MAX_LENGTH}")
        self.local = local
        self.max_frame_size = max_frame_size
        self.state = State.HANDSHAKE
        self.peer: Hello | None = None
        self.version: int | None = None
        self.capabilities: frozenset[str] = frozenset()
        self._hello_sent = False
        self._bye_sent = False
        self._buffer = bytearray()

    # -- output --

    def send(self, frame: Frame) -> bytes:
        """The bytes that carry ``frame``. Raises :class:`LocalProtocolError` if not allowed."""
        if isinstance(frame, Bye):
            # Allowed even after the peer broke the protocol: it tells the peer why we close.
            if self._bye_sent:
                raise LocalProtocolError("bye sent twice")
            self._bye_sent = True
            self.state = State.CLOSED
        elif self.state is State.CLOSED:
            raise LocalProtocolError("the connection is closed")
        elif isinstance(frame, Hello):
            if self._hello_sent:
                raise LocalProtocolError("hello sent twice")
            if frame is not self.local:
                raise LocalProtocolError("the hello sent must be the connection's own")
            self._hello_sent = True
            if self.peer is not None:
                self.state = State.OPEN
        elif self.state is not State.OPEN:
            raise LocalProtocolError(
                f"{type(frame).__name__.lower()} before the hellos were exchanged"
            )
        try:
            payload = _encoder.encode(frame)
        except (TypeError, ValueError, OverflowError, msgspec.MsgspecError) as exc:
            raise LocalProtocolError(f"cannot encode {type(frame).__name__}: {exc}") from None
        if len(payload) > self.max_frame_size:
            raise LocalProtocolError(
                f"{type(frame).__name__.lower()} frame of {len(payload)} bytes exceeds the "
                f"limit of {self.max_frame_size}"
            )
        return len(payload).to_bytes(HEADER_SIZE, "big") + payload

    def hello(self) -> bytes:
        """Our hello frame: the first thing to send."""
        return self.send(self.local)

    # -- input --

    def receive_data(self, data: bytes) -> list[Frame]:
        """Frames completed by ``data`` (possibly none). Raises :class:`RemoteProtocolError`.

        Once the connection is closed (after a bye or an error) further data is ignored.
        """
        if self.state is State.CLOSED:
            return []
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        offset = 0
        try:
            while len(buffer) - offset >= HEADER_SIZE:
                length = int.from_bytes(buffer[offset : offset + HEADER_SIZE], "big")
                if length > self.max_frame_size:
                    raise FrameTooLarge(length, self.max_frame_size)
                end = offset + HEADER_SIZE + length
                if len(buffer) < end:
                    break
                # A copy: msgspec.Raw fields keep a reference to the decoded buffer, which must
                # not be the bytearray we keep resizing.
                frame = self._decode(bytes(buffer[offset + HEADER_SIZE : end]))
                offset = end
                frames.append(frame)
                self._check(frame)
                if self.closed:
                    break
        except RemoteProtocolError:
            self.state = State.CLOSED
            buffer.clear()
            raise
        del buffer[:offset]
        if self.closed:
            buffer.clear()
        return frames

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def close(self) -> None:
        """Stop: ignore further input, refuse further output."""
        self.state = State.CLOSED
        self._buffer.clear()

    # -- internals --

    @staticmethod
    def _decode(payload: bytes) -> Frame:
        try:
            return _decoder.decode(payload)
        except msgspec.ValidationError as exc:
            frame_type = _frame_type(payload)
            if frame_type is not None and frame_type not in FRAME_TYPES:
                raise UnknownFrameType(frame_type) from None
            raise CorruptFrame(f"malformed {frame_type or 'frame'}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise CorruptFrame(f"undecodable frame: {exc}") from None

    def _check(self, frame: Frame) -> None:
        if isinstance(frame, Bye):
            self.state = State.CLOSED
        elif isinstance(frame, Hello):
            if self.peer is not None:
                raise UnexpectedFrame("a second hello")
            self._negotiate(frame)
            self.peer = frame
            if self._hello_sent:
                self.state = State.OPEN
        elif self.peer is None:
            raise UnexpectedFrame(f"{type(frame).__name__.lower()} before hello")

    def _negotiate(self, peer: Hello) -> None:
        local = self.local
        version = min(local.version, peer.version)
        ours = (local.min_version or local.version, local.version)
        theirs = (peer.min_version or peer.version, peer.version)
        if version < max(ours[0], theirs[0]):
            raise VersionMismatch(
                f"no common protocol version: we speak {_range(ours)}, "
                f"{peer.node!r} speaks {_range(theirs)}"
            )
        self.version = version
        self.capabilities = frozenset(local.capabilities) & frozenset(peer.capabilities)


def _range(versions: tuple[int, int]) -> str:
    low, high = versions
    return f"version {low}" if low == high else f"versions {low} to {high}"


def _frame_type(payload: bytes) -> str | None:
    """The tag of a payload that failed validation, if it has the shape of a frame at all."""
    try:
        value: Any = msgspec.msgpack.decode(payload)
    except msgspec.MsgspecError:
        return None
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return None
