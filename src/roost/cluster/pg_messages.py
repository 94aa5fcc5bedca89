"""The values process groups exchange: wire messages between scopes, and monitor events.

The protocol itself (who sends what, when, and what the receiver does) is specified in
:mod:`roost.cluster.pg`; this module only defines the shapes.

Wire messages are frozen ``msgspec.Struct`` values, tagged and ``array_like``: MessagePack arrays
whose first element is the tag (``"discover"``, ``"sync"``, ``"join"``, ``"leave"``,
``"goodbye"``) and whose other elements are the fields in order, so :data:`Message` decodes as
one tagged union. Every message carries the sender scope's ``incarnation``.

Groups and members are opaque to process groups: any hashable value the application chooses,
e.g. a group ``("sessions", "juliet@example.com")`` and a member ``(session_id, resource,
priority)``. They travel in these messages, so they must also be values msgspec encodes and
decodes back *to an equal, hashable value*. Decoded without a type, a MessagePack array becomes
a ``list``, which is not hashable: a driver decodes with the concrete types,
``msgspec.msgpack.Decoder(message_type(str, tuple[str, str, int]))`` (the messages are generic in
the group type and the member type).

Evolution: decoders ignore trailing array elements they do not know, so a later version may
append fields with defaults; :class:`Discover` says the sender's protocol version.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

import msgspec

PROTOCOL_VERSION = 1

G = TypeVar("G", bound=Hashable)  # a group
M = TypeVar("M", bound=Hashable)  # a member


class Discover(msgspec.Struct, tag="discover", array_like=True, frozen=True):
    """ "Send me your groups": answered with a :class:`Sync`."""

    incarnation: int
    version: int = PROTOCOL_VERSION


class Sync(msgspec.Struct, Generic[G, M], tag="sync", array_like=True, frozen=True):
    """All the sender's local groups and their members; replaces what the receiver had."""

    incarnation: int
    groups: tuple[tuple[G, tuple[M, ...]], ...]


class Join(msgspec.Struct, Generic[G, M], tag="join", array_like=True, frozen=True):
    """``members`` joined ``group`` on the sender (a member listed twice joined twice)."""

    incarnation: int
    group: G
    members: tuple[M, ...]


class Leave(msgspec.Struct, Generic[G, M], tag="leave", array_like=True, frozen=True):
    """Each of ``members`` left each of ``groups`` once on the sender.

    A group is listed once per membership that ended: a member that had joined ``g`` twice and
    died is ``Leave(members=(m,), groups=(g, g))``.
    """

    incarnation: int
    members: tuple[M, ...]
    groups: tuple[G, ...]


class Goodbye(msgspec.Struct, tag="goodbye", array_like=True, frozen=True):
    """The sender's scope stops: forget everything it owned."""

    incarnation: int


Message = Discover | Sync[G, M] | Join[G, M] | Leave[G, M] | Goodbye


def message_type(group: Any, member: Any) -> Any:
    """The type a driver decodes a scope's messages as: ``Message[group, member]``.

    ``msgspec.msgpack.Decoder(message_type(str, tuple[str, str, int]))``. (Written as a function
    because type checkers refuse to subscript a generic union alias in an expression.)
    """
    return cast(Any, Message)[group, member]


@dataclass(frozen=True, slots=True)
class Event(Generic[G, M]):
    """A change of membership seen by a monitor: ``members`` joined or left ``group``.

    A member that joined twice and then died is one event with the member listed twice.
    """

    kind: Literal["join", "leave"]
    group: G
    members: tuple[M, ...]
