"""XMPP Ping (XEP-0199): the server answers pings to itself and to a user's account."""

from __future__ import annotations

from roost.core.iq import IQRequest, Scope
from roost.core.module import Module, register_module
from roost.xmpp import errors, ns
from roost.xmpp.element import Element


@register_module
class PingModule(Module):
    name = "ping"
    server_features = (ns.PING,)

    def start(self) -> None:
        self.iq(Scope.SERVER, ns.PING, self._ping)
        self.iq(Scope.ACCOUNT, ns.PING, self._ping)

    async def _ping(self, request: IQRequest) -> Element:
        if request.type != "get" or request.payload.name != "ping":
            raise errors.bad_request()
        if not request.own_account and request.to.local is not None:
            raise errors.service_unavailable()  # XEP-0199 §4.2: pings to others go to clients
        return request.result()
