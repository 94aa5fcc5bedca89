"""In-band registration (XEP-0077): account creation, password change and cancellation.

Account creation by anyone who can connect is off unless the ``registration`` setting is on
(XEP-0479 lists it as to be supported but disabled by default); when on, it is only offered
on encrypted streams, so a password never crosses the network in the clear. Changing one's own
password and deleting one's own account (§3.2, §3.3) are always available to an
authenticated user.
"""

from __future__ import annotations

from typing import Any

from roost.c2s.session import C2SSession
from roost.core.hooks import Stop
from roost.core.iq import IQRequest, Scope
from roost.core.module import Module, register_module
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StanzaError, StreamError
from roost.xmpp.jid import InvalidJID, nodeprep


@register_module
class RegisterModule(Module):
    name = "register"
    account_features = (ns.REGISTER,)

    @property
    def open_registration(self) -> bool:
        return self.server.config.registration

    def start(self) -> None:
        self.iq(Scope.ACCOUNT, ns.REGISTER, self._account)
        self.hook("c2s.unauthenticated_iq", self._unauthenticated)
        self.hook("c2s.features.unauthenticated", self._stream_features)

    def _allowed(self, session: C2SSession) -> bool:
        config = self.server.config
        return self.open_registration and (
            session.connection.secure or config.allow_plain_without_tls
        )

    def _stream_features(self, features: Element, session: C2SSession) -> None:
        if self._allowed(session):
            features.add("register", ns.REGISTER_FEATURE)

    # -- before authentication: creating an account (§3.1) ----------------------------------

    def _unauthenticated(self, iq: Element, session: C2SSession) -> Any:
        query = iq.first_child()
        if query is None or query.xmlns != ns.REGISTER or query.name != "query":
            return iq
        if not self._allowed(session):
            return Stop(self._reply(session, iq, errors.service_unavailable()))
        return Stop(self._create(session, iq, query))

    async def _create(self, session: C2SSession, iq: Element, query: Element) -> None:
        kind = iq.attrs.get("type")
        if kind == "get":
            form = Element("query", ns.REGISTER)
            form.add_text("instructions", "Choose a user name and password.")
            form.add("username")
            form.add("password")
            await self._reply(session, iq, form)
            return
        if kind != "set":
            raise StreamError("not-authorized", "authenticate first")
        username = query.find_text("username") or ""
        password = query.find_text("password") or ""
        if not username or not password:
            await self._reply(session, iq, errors.not_acceptable("username and password needed"))
            return
        try:
            jid = f"{nodeprep(username)}@{self.server.domain}"
            created = await self.server.auth.create_user(jid, password)
        except (InvalidJID, ValueError) as exc:
            await self._reply(session, iq, errors.jid_malformed(str(exc)))
            return
        if not created:
            await self._reply(session, iq, errors.conflict("the user name is taken"))
            return
        self.log.info("registered %s", jid)
        await self._reply(session, iq, None)

    async def _reply(
        self, session: C2SSession, iq: Element, result: Element | StanzaError | None
    ) -> None:
        if isinstance(result, StanzaError):
            reply = result.reply_to(iq)
            reply.attrs.pop("from", None)
            reply.attrs.pop("to", None)
        else:
            reply = Element("iq", ns.CLIENT, {"type": "result", "id": iq.attrs.get("id", "")})
            if result is not None:
                reply.append(result)
        session.send(reply)

    # -- after authentication: password change (§3.3) and cancellation (§3.2) ---------------

    async def _account(self, request: IQRequest) -> Element:
        if not request.own_account:
            raise errors.forbidden()
        user = request.sender.bare_str
        if request.type == "get":
            query = Element("query", ns.REGISTER)
            query.add("registered")
            query.add_text("username", request.sender.local or "")
            return request.result(query)
        query = request.payload
        if query.find("remove") is not None:
            await self.server.storage.delete_user(user)
            self.log.info("account %s removed by its owner", user)
            for route in self.server.sessions.routes(user):
                if isinstance(route, C2SSession):
                    route.send(request.result())
                    route.stream_error(StreamError("not-authorized", "the account was removed"))
            return request.result()
        username = query.find_text("username")
        password = query.find_text("password")
        if not password:
            raise errors.bad_request("a password is needed")
        if username is not None and username and username != request.sender.local:
            raise errors.not_allowed("a user can only change its own password")
        try:
            await self.server.auth.set_password(user, password)
        except ValueError as exc:
            raise errors.not_acceptable(str(exc)) from None
        self.log.info("password changed for %s", user)
        return request.result()
