"""vCard-temp (XEP-0054): each user stores one vCard and anyone may read it."""

from __future__ import annotations

from roost.core.iq import IQRequest, Scope
from roost.core.module import Module, register_module
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.parser import parse_element

MAX_VCARD = 128 * 1024


@register_module
class VCardModule(Module):
    name = "vcard"
    server_features = (ns.VCARD,)
    account_features = (ns.VCARD,)

    def start(self) -> None:
        self.iq(Scope.ACCOUNT, ns.VCARD, self._vcard)
        self.iq(Scope.SERVER, ns.VCARD, self._server_vcard)

    async def _vcard(self, request: IQRequest) -> Element:
        if request.payload.name != "vCard":
            raise errors.bad_request()
        storage = self.server.storage
        owner = request.to.bare_str
        if request.type == "set":
            if not request.own_account:
                raise errors.forbidden("only the owner may change a vCard")
            data = request.payload.to_str(ns.CLIENT)
            if len(data) > MAX_VCARD:
                raise errors.not_acceptable("the vCard is too large")
            await storage.set_vcard(owner, data)
            return request.result()
        stored = await storage.get_vcard(owner)
        if stored is None:
            if not request.own_account and not await storage.user_exists(owner):
                raise errors.service_unavailable()
            return request.result(Element("vCard", ns.VCARD))
        return request.result(parse_element(stored))

    async def _server_vcard(self, request: IQRequest) -> Element:
        if request.type != "get":
            raise errors.not_allowed()
        vcard = Element("vCard", ns.VCARD)
        vcard.add_text("FN", "roost")
        return request.result(vcard)
