"""Service discovery (XEP-0030): what this server and its accounts implement.

The features listed are collected from the modules that are running (their
``server_features`` and ``account_features``), so disco never advertises something that is
switched off, and a new module is advertised by declaring its features, nothing more.
"""

from __future__ import annotations

from roost.core.iq import IQRequest, Scope
from roost.core.module import Module, register_module
from roost.xmpp import errors, ns
from roost.xmpp.element import Element


@register_module
class DiscoModule(Module):
    name = "disco"
    server_features = (ns.DISCO_INFO, ns.DISCO_ITEMS)
    account_features = (ns.DISCO_INFO, ns.DISCO_ITEMS)

    def start(self) -> None:
        self.iq(Scope.SERVER, ns.DISCO_INFO, self._server_info)
        self.iq(Scope.SERVER, ns.DISCO_ITEMS, self._server_items)
        self.iq(Scope.ACCOUNT, ns.DISCO_INFO, self._account_info)
        self.iq(Scope.ACCOUNT, ns.DISCO_ITEMS, self._account_items)

    def features(self, account: bool) -> list[str]:
        found: set[str] = set()
        for module in self.server.modules.values():
            found.update(module.account_features if account else module.server_features)
        return sorted(found)

    def _info(self, request: IQRequest, category: str, kind: str, account: bool) -> Element:
        if request.type != "get":
            raise errors.bad_request("disco is read-only")
        query = Element("query", ns.DISCO_INFO)
        node = request.payload.attrs.get("node")
        if node:
            raise errors.item_not_found("no such node")
        identity = query.add("identity", attrs={"category": category, "type": kind})
        if not account:
            identity.attrs["name"] = "roost"
        for feature in self.features(account):
            query.add("feature", attrs={"var": feature})
        return request.result(query)

    async def _server_info(self, request: IQRequest) -> Element:
        return self._info(request, "server", "im", account=False)

    async def _account_info(self, request: IQRequest) -> Element:
        # XEP-0030 §3.1: an account answers with the account/registered identity; only the
        # owner and contacts should learn that much, but the identity reveals no more than
        # a message bounce would.
        if not await self.server.storage.user_exists(request.to.bare_str):
            raise errors.service_unavailable()
        return self._info(request, "account", "registered", account=True)

    async def _server_items(self, request: IQRequest) -> Element:
        if request.type != "get":
            raise errors.bad_request("disco is read-only")
        return request.result(Element("query", ns.DISCO_ITEMS))

    async def _account_items(self, request: IQRequest) -> Element:
        if request.type != "get":
            raise errors.bad_request("disco is read-only")
        if not request.own_account:
            raise errors.service_unavailable()
        return request.result(Element("query", ns.DISCO_ITEMS))
