"""Authentication and resource binding with slixmpp (RFC 6120 §5-§7)."""

from __future__ import annotations

import asyncio

import pytest

from roost.testing import RunningServer
from tests.e2e.conftest import TIMEOUT, Connect


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
async def test_client_logs_in_with_each_mechanism_over_each_tls_kind(
    roost_server: RunningServer, connect: Connect, mechanism: str, direct_tls: bool
) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(f"{jid}/laptop", mechanism=mechanism, direct_tls=direct_tls)
    assert client.boundjid.full == "alice@localhost/laptop"
    assert len(roost_server.server.sessions) == 1


async def test_wrong_password_fails_authentication(
    roost_server: RunningServer, connect: Connect
) -> None:
    jid = await roost_server.create_user("alice", "right")
    client = await connect(f"{jid}/x", "wrong", mechanism="SCRAM-SHA-256", expect_failure=True)
    assert not client.started.is_set()
    assert len(roost_server.server.sessions) == 0


async def test_unknown_user_fails_like_a_wrong_password(
    roost_server: RunningServer, connect: Connect
) -> None:
    client = await connect("nobody@localhost/x", mechanism="SCRAM-SHA-1", expect_failure=True)
    assert not client.started.is_set()


async def test_server_generates_a_resource_when_none_is_asked(
    roost_server: RunningServer, connect: Connect
) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(jid)
    assert client.boundjid.bare == jid
    assert client.boundjid.resource


async def test_second_login_with_same_full_jid_replaces_the_first_with_conflict(
    roost_server: RunningServer, connect: Connect
) -> None:
    jid = await roost_server.create_user("alice")
    first = await connect(f"{jid}/phone")
    errors: asyncio.Queue[str] = asyncio.Queue()
    first.add_event_handler("stream_error", lambda error: errors.put_nowait(error["condition"]))
    second = await connect(f"{jid}/phone")
    assert await asyncio.wait_for(errors.get(), TIMEOUT) == "conflict"
    await asyncio.wait_for(first.ended.wait(), TIMEOUT)
    assert second.started.is_set()
    sessions = roost_server.server.sessions.routes(jid)
    assert len(sessions) == 1
