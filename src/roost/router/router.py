"""The router: where a stanza goes once its sender is known (RFC 6121 §8).

Input is a stanza whose ``from`` the server has stamped. The router reads ``to`` and applies the
delivery rules for the three stanza kinds and the three kinds of address (server, bare JID,
full JID). Local sessions are found in the session registry without any I/O, and delivery to
an online user is synchronous: the common case of the message path never awaits.

Work that needs I/O (storing a message for an offline user, running an IQ handler that reads
storage) comes back from :meth:`Router.route` as an awaitable. The caller awaits it before it
processes the next stanza of the same sender, which keeps each sender's stanzas in order
without a task per stanza.

Modules take part through fold hooks, each given ``(stanza, to)`` and returning a stanza to
continue with (the same or a changed one), ``None`` when they consumed it, or an awaitable
when they took it over:

``router.to_user``       any stanza to a local user's JID, first (blocking)
``router.message``       a message to a local user, before delivery (archives)
``router.presence``      a presence to a local user (subscription handling, probes)
``router.offline``       a chat/normal message to a user without available resources
``router.server_stanza`` a message or presence to the server itself

and one notification, ``router.message_delivered`` ``(stanza, to, routes)``, after a message
went to local resources (message carbons copy it to the others).

Errors (unknown users, unknown IQ namespaces, unreachable domains) are bounced to the sender
as error stanzas; an error stanza is never bounced, so errors cannot loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from roost.core.iq import IQRequest, Scope
from roost.gate.storage import storage_stanza_error
from roost.storage.base import StorageError
from roost.xmpp import errors
from roost.xmpp.element import Element
from roost.xmpp.errors import StanzaError
from roost.xmpp.jid import JID, InvalidJID, parse_jid

if TYPE_CHECKING:
    from roost.c2s.session import C2SSession
    from roost.core.server import Server

from roost.router.registry import Route

log = logging.getLogger(__name__)

Pending = Awaitable[None] | None


class Router:
    __slots__ = ("_hooks", "_iq", "_server", "domain", "registry")

    def __init__(self, server: Server) -> None:
        self._server = server
        self._hooks = server.hooks
        self._iq = server.iq
        self.registry = server.sessions
        self.domain = server.config.domain

    # -- entry point -------------------------------------------------------------------------

    def route(self, stanza: Element, origin: C2SSession | None = None) -> Pending:
        """Deliver ``stanza`` (its ``from`` set). See the module docstring."""
        to_attr = stanza.attrs.get("to")
        try:
            to = parse_jid(to_attr) if to_attr else parse_jid(stanza.attrs["from"]).bare
        except (InvalidJID, KeyError):
            return self.bounce(stanza, errors.jid_malformed())
        if to.domain != self.domain:
            return self.bounce(
                stanza, errors.remote_server_not_found(f"{to.domain} is not served here")
            )
        if to.local is None:
            return self._to_server(stanza, to, origin)
        hooks = self._hooks
        if hooks.has("router.to_user"):
            folded = hooks.fold("router.to_user", stanza, to)
            if not isinstance(folded, Element):
                return folded  # type: ignore[no-any-return]
            stanza = folded
        name = stanza.name
        if name == "message":
            return self._message(stanza, to)
        if name == "presence":
            return self._presence(stanza, to)
        if name == "iq":
            return self._iq_to_user(stanza, to, origin)
        return None

    def bounce(self, stanza: Element, error: StanzaError) -> Pending:
        """Return ``stanza`` to its sender as an error (never for errors and IQ results)."""
        kind = stanza.attrs.get("type")
        if kind == "error" or (stanza.name == "iq" and kind == "result"):
            return None
        if "from" not in stanza.attrs:
            return None
        reply = error.reply_to(stanza)
        if "from" not in reply.attrs:
            reply.attrs["from"] = self.domain
        return self.route(reply)

    # -- messages (RFC 6121 §8.5) ------------------------------------------------------------

    def _message(self, stanza: Element, to: JID) -> Pending:
        folded = self._hooks.fold("router.message", stanza, to)
        if not isinstance(folded, Element):
            return folded  # type: ignore[no-any-return]
        stanza = folded
        kind = stanza.attrs.get("type", "normal")
        if to.resource is not None:
            route = self.registry.get(to)
            if route is not None:
                route.deliver(stanza)  # §8.5.3.1: a connected resource gets it
                self._hooks.run("router.message_delivered", stanza, to, [route])
                return None
            if kind not in ("normal", "chat"):
                # §8.5.3.2.1: groupchat bounces; headline and error are dropped.
                if kind == "groupchat":
                    return self.bounce(stanza, errors.service_unavailable())
                return None
        if kind == "error":
            return None
        routes = self.registry.routes(to.bare_str)
        targets = _available(routes)
        if targets:
            if kind == "groupchat":
                return self.bounce(stanza, errors.service_unavailable())
            if kind != "headline":
                targets = _highest_priority(targets)
            for route in targets:
                route.deliver(stanza)
            self._hooks.run("router.message_delivered", stanza, to, targets)
            return None
        if kind in ("normal", "chat"):
            # §8.5.2.2.1: stored for later when the offline module takes it (it also bounces
            # messages to users who do not exist, §8.5.1).
            pending = self._hooks.fold("router.offline", stanza, to)
            if not isinstance(pending, Element):
                return pending  # type: ignore[no-any-return]
        if kind == "headline":
            return None
        return self.bounce(stanza, errors.service_unavailable())

    # -- presence (RFC 6121 §8.5.2.1.2, §8.5.3) ---------------------------------------------

    def _presence(self, stanza: Element, to: JID) -> Pending:
        folded = self._hooks.fold("router.presence", stanza, to)
        if not isinstance(folded, Element):
            return folded  # type: ignore[no-any-return]
        stanza = folded
        if to.resource is not None:
            route = self.registry.get(to)
            if route is not None:
                route.deliver(stanza)
            return None
        for route in _available(self.registry.routes(to.bare_str)):
            route.deliver(stanza)
        return None

    # -- IQs (RFC 6121 §8.5.2.1.3, §8.5.3.1; RFC 6120 §10.5.3) -------------------------------

    def _iq_to_user(self, stanza: Element, to: JID, origin: C2SSession | None) -> Pending:
        kind = stanza.attrs.get("type")
        if to.resource is not None:
            route = self.registry.get(to)
            if route is not None:
                route.deliver(stanza)
                return None
            if kind in ("get", "set"):
                return self.bounce(stanza, errors.service_unavailable())
            return None
        if kind not in ("get", "set"):
            return None  # results and errors to a bare JID have no one waiting for them
        return self._dispatch_iq(Scope.ACCOUNT, stanza, to, origin)

    def _to_server(self, stanza: Element, to: JID, origin: C2SSession | None) -> Pending:
        if stanza.name == "iq":
            kind = stanza.attrs.get("type")
            if kind in ("get", "set"):
                if to.resource is not None:
                    return self.bounce(stanza, errors.service_unavailable())
                return self._dispatch_iq(Scope.SERVER, stanza, to, origin)
            self._hooks.run("router.iq_response", stanza)
            return None
        folded = self._hooks.fold("router.server_stanza", stanza, to)
        if not isinstance(folded, Element):
            return folded  # type: ignore[no-any-return]
        stanza = folded
        if stanza.name == "message" and stanza.attrs.get("type") not in ("error", "groupchat"):
            return self.bounce(stanza, errors.service_unavailable())
        return None

    def _dispatch_iq(
        self, scope: Scope, stanza: Element, to: JID, origin: C2SSession | None
    ) -> Pending:
        payload = stanza.first_child()
        if payload is None or sum(1 for _ in stanza.elements()) != 1:
            # RFC 6120 §8.2.3: a get or set contains exactly one payload element.
            return self.bounce(stanza, errors.bad_request("an IQ needs exactly one payload"))
        handler = self._iq.find(scope, payload.xmlns)
        if handler is None:
            return self.bounce(stanza, errors.service_unavailable())
        try:
            sender = parse_jid(stanza.attrs["from"])
        except (InvalidJID, KeyError):
            return None
        return self._run_iq(handler(IQRequest(stanza, sender, to, payload, origin)), stanza)

    async def _run_iq(self, call: Awaitable[Element | None], stanza: Element) -> None:
        try:
            reply = await call
        except StanzaError as exc:
            reply = exc.reply_to(stanza)
        except StorageError as exc:
            # The store failed or is gated: a wait-type error, so that the client retries later.
            log.debug("IQ handler could not use storage for %s: %s", stanza, exc)
            reply = storage_stanza_error(exc).reply_to(stanza)
        except Exception:
            log.exception("IQ handler failed for %s", stanza)
            reply = errors.internal_server_error().reply_to(stanza)
        if reply is not None:
            pending = self.route(reply)
            if pending is not None:
                await pending

    # -- helpers for modules -----------------------------------------------------------------

    def deliver_to_user(self, stanza: Element, bare: str) -> int:
        """Deliver to every available resource of a local user; returns how many got it."""
        targets = _available(self.registry.routes(bare))
        for route in targets:
            route.deliver(stanza)
        return len(targets)

    def statistics(self) -> dict[str, Any]:
        return {"sessions": len(self.registry), "users": self.registry.users()}


def _available(routes: list[Route]) -> list[Route]:
    """Resources that take messages addressed to the bare JID: available, priority >= 0."""
    return [r for r in routes if r.available and r.priority >= 0]


def _highest_priority(routes: list[Route]) -> list[Route]:
    if len(routes) < 2:
        return routes
    top = max(r.priority for r in routes)
    return [r for r in routes if r.priority == top]
