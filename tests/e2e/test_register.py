"""In-band registration (XEP-0077): off by default, sign-up when enabled, password change."""

from __future__ import annotations

import pytest

from roost.testing import RunningServer
from roost.testing.rawclient import RawClient, client_context
from roost.xmpp import ns


async def _secure_stream(server: RunningServer) -> tuple[RawClient, object]:
    client = await RawClient.connect(server.host, server.port)
    await client.open_stream()
    await client.starttls(client_context(server.cert))
    features = await client.open_stream()
    return client, features


async def _register(client: RawClient, username: str, password: str) -> str:
    await client.send(
        f"<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{username}"
        f"</username><password>{password}</password></query></iq>"
    )
    reply = await client.expect("iq")
    if reply.attrs["type"] == "result":
        return "ok"
    error = reply.find("error")
    assert error is not None
    return next(c.name for c in error.elements() if c.xmlns == ns.STANZAS)


async def test_registration_is_off_by_default(roost_server: RunningServer) -> None:
    client, features = await _secure_stream(roost_server)
    assert features.find("register", ns.REGISTER_FEATURE) is None  # type: ignore[attr-defined]
    assert await _register(client, "mallory", "pw") == "service-unavailable"
    assert not await roost_server.server.storage.user_exists("mallory@localhost")


@pytest.mark.roost_config(registration=True)
async def test_registration_creates_an_account_that_can_log_in(
    roost_server: RunningServer,
) -> None:
    client, features = await _secure_stream(roost_server)
    assert features.find("register", ns.REGISTER_FEATURE) is not None  # type: ignore[attr-defined]
    await client.send("<iq type='get' id='form'><query xmlns='jabber:iq:register'/></iq>")
    form = await client.expect("iq")
    query = form.find("query", ns.REGISTER)
    assert query is not None
    assert query.find("username", ns.REGISTER) is not None
    assert query.find("password", ns.REGISTER) is not None
    assert await _register(client, "Dave", "pw") == "ok"
    assert await _register(client, "dave", "other") == "conflict"
    assert await _register(client, "bad name", "pw") == "jid-malformed"
    assert await _register(client, "", "pw") == "not-acceptable"
    logged = await RawClient.logged_in(
        roost_server.host, roost_server.port, "dave", "pw", cert=roost_server.cert
    )
    assert logged.jid.startswith("dave@localhost/")


@pytest.mark.roost_config(registration=True)
async def test_registration_is_not_offered_before_tls(roost_server: RunningServer) -> None:
    client = await RawClient.connect(roost_server.host, roost_server.port)
    features = await client.open_stream()
    assert features.find("register", ns.REGISTER_FEATURE) is None


async def test_password_change_and_account_removal(roost_server: RunningServer) -> None:
    await roost_server.create_user("erin", "old")
    client = await RawClient.logged_in(
        roost_server.host, roost_server.port, "erin", "old", cert=roost_server.cert
    )
    await client.send(
        "<iq type='set' id='pw'><query xmlns='jabber:iq:register'><username>erin</username>"
        "<password>new</password></query></iq>"
    )
    reply = await client.expect("iq")
    assert reply.attrs["type"] == "result"
    with pytest.raises(AssertionError, match="authentication failed"):
        await RawClient.logged_in(
            roost_server.host, roost_server.port, "erin", "old", cert=roost_server.cert
        )
    again = await RawClient.logged_in(
        roost_server.host, roost_server.port, "erin", "new", cert=roost_server.cert
    )
    await again.send(
        "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>"
    )
    reply = await again.expect("iq")
    assert reply.attrs["type"] == "result"
    assert await again.stream_error() == "not-authorized"
    assert not await roost_server.server.storage.user_exists("erin@localhost")
