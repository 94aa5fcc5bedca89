"""IQ dispatch tables (RFC 6120 §8.2.3): which handler answers a get or set, by payload.

An IQ addressed to the server's domain goes to a *server* handler; one addressed to a user's
bare JID (or with no ``to``, which means the sender's own account, RFC 6120 §10.5.3) goes to an
*account* handler, which the server runs on the user's behalf. Handlers are found by the
namespace of the IQ's single payload element. An IQ that no handler claims is answered with
``<service-unavailable/>`` in one place, the router, as RFC 6120 §8.4 asks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from roost.xmpp.element import Element
from roost.xmpp.jid import JID

if TYPE_CHECKING:
    from roost.c2s.session import C2SSession


class Scope(Enum):
    SERVER = "server"
    ACCOUNT = "account"


@dataclass(slots=True)
class IQRequest:
    """A get or set IQ with its parsed addresses and, when local, the session that sent it."""

    stanza: Element
    sender: JID
    to: JID
    payload: Element
    origin: C2SSession | None = None

    @property
    def type(self) -> str:
        return self.stanza.attrs.get("type", "")

    @property
    def own_account(self) -> bool:
        """Whether the IQ is about the sender's own account (no ``to``, or to its bare JID)."""
        return self.to.bare_str == self.sender.bare_str

    def result(self, payload: Element | None = None) -> Element:
        return iq_result(self.stanza, payload)


IQHandler = Callable[[IQRequest], Awaitable[Element | None]]


def iq_result(iq: Element, payload: Element | None = None) -> Element:
    """The ``type='result'`` reply to ``iq``, addresses swapped (RFC 6120 §8.2.3)."""
    attrs = {"type": "result", "id": iq.attrs.get("id", "")}
    sender = iq.attrs.get("from")
    if sender is not None:
        attrs["to"] = sender
    to = iq.attrs.get("to")
    if to is not None:
        attrs["from"] = to
    reply = Element("iq", iq.xmlns, attrs)
    if payload is not None:
        reply.children.append(payload)
    return reply


class IQTable:
    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[Scope, dict[str, IQHandler]] = {scope: {} for scope in Scope}

    def register(self, scope: Scope, xmlns: str, handler: IQHandler) -> None:
        table = self._tables[scope]
        if xmlns in table:
            raise ValueError(f"an IQ handler for {xmlns} ({scope.value}) is already registered")
        table[xmlns] = handler

    def unregister(self, scope: Scope, xmlns: str, handler: IQHandler) -> None:
        table = self._tables[scope]
        if table.get(xmlns) is not handler:
            raise KeyError(f"{handler!r} is not the IQ handler for {xmlns} ({scope.value})")
        del table[xmlns]

    def find(self, scope: Scope, xmlns: str) -> IQHandler | None:
        return self._tables[scope].get(xmlns)

    def namespaces(self, scope: Scope) -> list[str]:
        return sorted(self._tables[scope])
