"""Service basics with slixmpp: disco, ping, version, vCard, unknown IQs."""

from __future__ import annotations

import pytest
from slixmpp.exceptions import IqError

from roost.testing import RunningServer
from roost.xmpp import ns
from tests.e2e.conftest import Connect


async def test_disco_lists_exactly_what_is_implemented(
    roost_server: RunningServer, connect: Connect
) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(jid)
    info = await client.plugin["xep_0030"].get_info(jid=roost_server.domain)
    features = set(info["disco_info"]["features"])
    assert features == {
        ns.DISCO_INFO,
        ns.DISCO_ITEMS,
        ns.PING,
        ns.VERSION,
        ns.VCARD,
        ns.OFFLINE,
        "urn:xmpp:carbons:2",
        "urn:xmpp:blocking",
    }
    # The archive is the user's: MAM is advertised on the account (XEP-0313 §6.1).
    account = await client.plugin["xep_0030"].get_info(jid=jid)
    assert "urn:xmpp:mam:2" in set(account["disco_info"]["features"])
    identities = info["disco_info"]["identities"]
    assert ("server", "im", None, "roost") in identities


async def test_ping_and_version(roost_server: RunningServer, connect: Connect) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(jid)
    rtt = await client.plugin["xep_0199"].ping(roost_server.domain)
    assert rtt >= 0
    version = await client.plugin["xep_0092"].get_version(roost_server.domain)
    assert version["software_version"]["name"] == "roost"


async def test_vcard_set_and_read_by_another_user(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(alice_jid)
    bob = await connect(bob_jid)
    vcard = alice.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Alice Liddell"
    vcard["NICKNAME"] = "alice"
    await alice.plugin["xep_0054"].publish_vcard(vcard)
    got = await bob.plugin["xep_0054"].get_vcard(alice_jid, cached=False)
    assert got["vcard_temp"]["FN"] == "Alice Liddell"
    assert got["vcard_temp"]["NICKNAME"] == ["alice"]


async def test_unknown_iq_namespace_gets_service_unavailable(
    roost_server: RunningServer, connect: Connect
) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(jid)
    iq = client.make_iq_get(queryxmlns="urn:example:nothing", ito=roost_server.domain)
    with pytest.raises(IqError) as failure:
        await iq.send()
    assert failure.value.iq["error"]["condition"] == "service-unavailable"
