"""Hostile and broken input: a clear error for the offender, nothing lost, others unaffected."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from roost.c2s.session import C2SSession
from roost.testing import RunningServer
from roost.testing.rawclient import RawClient, client_context
from roost.xmpp import ns
from tests.e2e.conftest import TIMEOUT

HEADER = (
    "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams'>"
)


async def _raw(server: RunningServer) -> RawClient:
    return await RawClient.connect(server.host, server.port)


async def _logged_in(server: RunningServer, user: str, resource: str = "r") -> RawClient:
    return await RawClient.logged_in(
        server.host, server.port, user, cert=server.cert, resource=resource
    )


@pytest.mark.parametrize(
    ("payload", "condition"),
    [
        (b"<message><body>unclosed</message>", "not-well-formed"),
        (b"<message to='a@b'><body>&undefined;</body></message>", "not-well-formed"),
        (b"<message>\xff\xfe</message>", "not-well-formed"),
        (b"<?evil processing='instruction'?>", "restricted-xml"),
        (b"<!-- a comment -->", "restricted-xml"),
    ],
)
async def test_broken_xml_gets_a_stream_error_and_the_stream_closes(
    roost_server: RunningServer, payload: bytes, condition: str
) -> None:
    client = await _raw(roost_server)
    await client.open_stream()
    await client.send(payload)
    assert await client.stream_error() == condition
    assert await client.closed()


async def test_a_dtd_before_the_stream_is_restricted_xml(roost_server: RunningServer) -> None:
    client = await _raw(roost_server)
    await client.send(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]>" + HEADER.encode())
    assert await client.stream_error() == "restricted-xml"
    assert await client.closed()


@pytest.mark.roost_config(max_stanza_size=4096)
async def test_an_oversized_stanza_is_a_policy_violation(roost_server: RunningServer) -> None:
    await roost_server.create_user("alice")
    client = await _logged_in(roost_server, "alice")
    await client.send(
        b"<message to='alice@localhost'><body>" + b"x" * 10_000 + b"</body></message>"
    )
    assert await client.stream_error() == "policy-violation"
    assert await client.closed()


@pytest.mark.roost_config(max_stanza_size=4096)
async def test_a_stanza_that_never_ends_is_cut_off_at_the_limit(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    client = await _logged_in(roost_server, "alice")
    await client.send(b"<message to='alice@localhost'><body>")
    for _ in range(10):
        await client.send(b"y" * 1000)
    assert await client.stream_error() == "policy-violation"


async def test_stanza_before_authentication_is_not_authorized(
    roost_server: RunningServer,
) -> None:
    client = await _raw(roost_server)
    await client.open_stream()
    await client.starttls(client_context(roost_server.cert))
    await client.open_stream()
    await client.send(b"<message to='bob@localhost'><body>sneaky</body></message>")
    assert await client.stream_error() == "not-authorized"


async def test_plain_auth_is_refused_before_tls(roost_server: RunningServer) -> None:
    await roost_server.create_user("alice")
    client = await _raw(roost_server)
    features = await client.open_stream()
    starttls = features.find("starttls", ns.TLS)
    assert starttls is not None
    assert starttls.find("required", ns.TLS) is not None
    assert features.find("mechanisms", ns.SASL) is None
    failure = await client.auth_plain("alice", "secret")
    assert failure.name == "failure"
    assert failure.find("encryption-required", ns.SASL) is not None


async def test_wrong_password_gives_not_authorized_and_allows_a_retry(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    client = await _raw(roost_server)
    await client.open_stream()
    await client.starttls(client_context(roost_server.cert))
    await client.open_stream()
    failure = await client.auth_plain("alice", "wrong")
    assert failure.name == "failure"
    assert failure.find("not-authorized", ns.SASL) is not None
    success = await client.auth_plain("alice", "secret")
    assert success.name == "success"


async def test_tls_1_2_is_the_oldest_version_accepted(roost_server: RunningServer) -> None:
    # This machine's OpenSSL will not even offer TLS 1.1 as a client, so a handshake test of
    # refusal would pass whatever the server allowed; the server's own floor is asserted
    # instead, and a client limited to TLS 1.2 must still get in.
    context = roost_server.server.tls_context
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    client_12 = client_context(roost_server.cert)
    client_12.maximum_version = ssl.TLSVersion.TLSv1_2
    client = await RawClient.connect(roost_server.host, roost_server.tls_port, tls=client_12)
    features = await client.open_stream()
    assert features.find("mechanisms", ns.SASL) is not None
    tls = client.writer.get_extra_info("ssl_object")
    assert tls.version() == "TLSv1.2"


@pytest.mark.parametrize(
    ("header", "condition"),
    [
        (HEADER.replace("localhost", "elsewhere.example"), "host-unknown"),
        (HEADER.replace("version='1.0'", "version='0.9'"), "unsupported-version"),
        (HEADER.replace("jabber:client", "jabber:server"), "invalid-namespace"),
        (HEADER.replace("http://etherx.jabber.org/streams", "urn:wrong"), "invalid-namespace"),
    ],
)
async def test_bad_stream_headers(roost_server: RunningServer, header: str, condition: str) -> None:
    client = await _raw(roost_server)
    await client.send(header)
    assert await client.stream_error() == condition


async def test_invalid_jid_in_to_gets_jid_malformed(roost_server: RunningServer) -> None:
    await roost_server.create_user("alice")
    client = await _logged_in(roost_server, "alice")
    await client.send("<message to='a b@localhost' id='m1'><body>x</body></message>")
    error = await client.expect("message")
    assert error.attrs["type"] == "error"
    assert error.find("error").find("jid-malformed", ns.STANZAS) is not None  # type: ignore[union-attr]
    # The stream carries on.
    await client.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    pong = await client.expect("iq")
    assert (pong.attrs["id"], pong.attrs["type"]) == ("p1", "result")


async def test_iq_nobody_handles_gets_service_unavailable(roost_server: RunningServer) -> None:
    await roost_server.create_user("alice")
    client = await _logged_in(roost_server, "alice")
    await client.send("<iq type='get' id='q1'><query xmlns='urn:example:unknown'/></iq>")
    error = await client.expect("iq")
    assert error.attrs["type"] == "error"
    assert error.find("error").find("service-unavailable", ns.STANZAS) is not None  # type: ignore[union-attr]


async def test_a_client_that_vanishes_mid_stanza_loses_nothing_it_fully_sent(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    closed = asyncio.Event()

    def on_closed(session: C2SSession) -> None:
        if session.jid.bare_str == "alice@localhost":
            closed.set()

    roost_server.server.hooks.add("c2s.closed", on_closed)
    bob = await _logged_in(roost_server, "bob")
    await bob.send("<presence/>")
    await bob.expect("presence")  # bob is available once his own presence comes back
    alice = await _logged_in(roost_server, "alice")
    complete = b"".join(
        f"<message to='bob@localhost' type='chat' id='m{i}'><body>n{i}</body></message>".encode()
        for i in range(50)
    )
    await alice.send(complete + b"<message to='bob@localhost'><body>half")
    alice.writer.transport.abort()
    await asyncio.wait_for(closed.wait(), TIMEOUT)
    assert roost_server.server.sessions.routes("alice@localhost") == []
    bodies: list[str | None] = []
    while len(bodies) < 50:
        message = await bob.expect("message")
        bodies.append(message.find_text("body"))
    assert bodies == [f"n{i}" for i in range(50)]


async def test_messages_from_a_vanished_client_to_an_offline_user_are_stored(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    closed = asyncio.Event()
    roost_server.server.hooks.add("c2s.closed", lambda session: closed.set())
    alice = await _logged_in(roost_server, "alice")
    complete = b"".join(
        f"<message to='bob@localhost' type='chat'><body>n{i}</body></message>".encode()
        for i in range(30)
    )
    await alice.send(complete + b"<message to='bob@lo")
    alice.writer.transport.abort()
    await asyncio.wait_for(closed.wait(), TIMEOUT)
    stored = await roost_server.server.storage.fetch_offline("bob@localhost")
    assert [m.stanza.count("<body>n") for m in stored] == [1] * 30


@pytest.mark.roost_config(auth_timeout=0.5)
async def test_unauthenticated_connections_time_out_while_others_chat_on(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    loiterer = await _raw(roost_server)
    await loiterer.open_stream()
    alice = await _logged_in(roost_server, "alice")
    bob = await _logged_in(roost_server, "bob")
    await bob.send("<presence/>")
    await bob.expect("presence")  # bob is available once his own presence comes back
    assert await loiterer.stream_error() == "connection-timeout"
    assert await loiterer.closed()
    await alice.send("<message to='bob@localhost' type='chat'><body>still here</body></message>")
    message = await bob.expect("message")
    assert message.find_text("body") == "still here"
