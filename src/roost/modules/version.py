"""Software Version (XEP-0092): the server's name and version; no operating system, which
would only help an attacker."""

from __future__ import annotations

from roost import __version__
from roost.core.iq import IQRequest, Scope
from roost.core.module import Module, register_module
from roost.xmpp import errors, ns
from roost.xmpp.element import Element


@register_module
class VersionModule(Module):
    name = "version"
    server_features = (ns.VERSION,)

    def start(self) -> None:
        self.iq(Scope.SERVER, ns.VERSION, self._version)

    async def _version(self, request: IQRequest) -> Element:
        if request.type != "get":
            raise errors.bad_request()
        query = Element("query", ns.VERSION)
        query.add_text("name", "roost")
        query.add_text("version", __version__)
        return request.result(query)
