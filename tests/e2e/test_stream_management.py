"""Stream management (XEP-0198): acknowledgements, resumption after a real socket abort,
and what happens to unacknowledged stanzas when a session cannot be resumed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from roost.c2s.resumption import ResumptionTable
from roost.core.hooks import Stop
from roost.testing import RunningServer
from roost.testing.rawclient import RawClient
from roost.testing.smclient import SMClient
from roost.xmpp import ns
from roost.xmpp.element import Element
from tests.e2e.conftest import TIMEOUT, held_in_hook


async def _logged_in(server: RunningServer, user: str, resource: str = "r") -> RawClient:
    return await RawClient.logged_in(
        server.host, server.port, user, cert=server.cert, resource=resource
    )


async def _available(client: RawClient) -> None:
    await client.send("<presence/>")
    await client.expect("presence")


PING = "<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


def _chat(to: str, body: str) -> str:
    return f"<message to='{to}' type='chat'><body>{body}</body></message>"


async def test_enable_then_acks_count_handled_stanzas(roost_server: RunningServer) -> None:
    await roost_server.create_user("alice")
    client = await _logged_in(roost_server, "alice")
    features_sm = True
    assert features_sm
    await client.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    enabled = await client.expect("enabled", ns.SM)
    assert enabled.attrs["resume"] == "true"
    assert enabled.attrs["id"]
    assert int(enabled.attrs["max"]) > 0
    for i in range(3):
        await client.send(PING.replace("sync", f"p{i}"))
    await client.send("<r xmlns='urn:xmpp:sm:3'/>")
    answer = await client.expect("a", ns.SM)
    assert answer.attrs["h"] == "3"


async def test_server_asks_for_acks_and_forgets_what_was_acknowledged(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    alice = SMClient(roost_server.host, roost_server.port, "alice", cert=roost_server.cert)
    got: asyncio.Queue[Element] = asyncio.Queue()
    alice.on_stanza = got.put_nowait
    await alice.start()
    await alice.send("<presence/>")
    bob = await _logged_in(roost_server, "bob")
    for i in range(20):
        await bob.send(_chat("alice@localhost", f"m{i}"))
    bodies: list[str | None] = []
    while len(bodies) < 20:
        stanza = await asyncio.wait_for(got.get(), TIMEOUT)
        if stanza.name == "message":
            bodies.append(stanza.find_text("body"))
    assert bodies == [f"m{i}" for i in range(20)]
    # The server asked for acknowledgements on its own; after the client's answer its queue
    # holds at most what was sent since the last request.
    session = roost_server.server.sessions.routes("alice@localhost")[0]
    sm = session.sm  # type: ignore[attr-defined]
    assert sm is not None
    assert len(sm.queue) < 20
    await alice.close()


async def test_an_ack_for_more_than_was_sent_is_a_stream_error(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    client = await _logged_in(roost_server, "alice")
    await client.send("<enable xmlns='urn:xmpp:sm:3'/>")
    await client.expect("enabled", ns.SM)
    await client.send("<a xmlns='urn:xmpp:sm:3' h='5'/>")
    error = await client.expect("error", ns.STREAM)
    assert error.find("undefined-condition", ns.STREAMS) is not None
    too_high = error.find("handled-count-too-high", ns.SM)
    assert too_high is not None
    assert (too_high.attrs["h"], too_high.attrs["send-count"]) == ("5", "0")
    assert await client.closed()


async def _resume_attempt(server: RunningServer, previd: str, h: int = 0) -> Element:
    client = await RawClient.connect(server.host, server.port)
    from roost.testing.rawclient import client_context

    await client.open_stream()
    await client.starttls(client_context(server.cert))
    await client.open_stream()
    await client.auth_plain("alice", "secret")
    await client.open_stream(restart=True)
    await client.send(f"<resume xmlns='urn:xmpp:sm:3' h='{h}' previd='{previd}'/>")
    return await client.next_element()


async def test_resume_with_an_unknown_id_fails_with_item_not_found(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    answer = await _resume_attempt(roost_server, "no-such-id")
    assert answer.name == "failed"
    assert answer.find("item-not-found", ns.STANZAS) is not None
    assert "h" not in answer.attrs


async def test_resume_of_an_ended_session_fails_and_says_what_was_handled(
    roost_server: RunningServer,
) -> None:
    await roost_server.create_user("alice")
    client = SMClient(roost_server.host, roost_server.port, "alice", cert=roost_server.cert)
    await client.start()
    for i in range(4):
        await client.send(PING.replace("sync", f"p{i}"))
    await client.request_ack()
    await client.close()
    await roost_server.server.settle()
    answer = await _resume_attempt(roost_server, client.sm_id)
    assert answer.name == "failed"
    assert answer.find("item-not-found", ns.STANZAS) is not None
    assert answer.attrs["h"] == "4"


class Inbox:
    """Message bodies an SMClient received, with a way to wait for a count."""

    def __init__(self, client: SMClient) -> None:
        self.bodies: list[str] = []
        self.presences = 0
        self._changed = asyncio.Event()
        client.on_stanza = self._on_stanza

    def _on_stanza(self, stanza: Element) -> None:
        if stanza.name == "message":
            self.bodies.append(stanza.find_text("body") or "")
        elif stanza.name == "presence":
            self.presences += 1
        self._changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), TIMEOUT)


def _resume_asked(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set when the server looks up the session a <resume/> names."""
    asked = asyncio.Event()
    take = ResumptionTable.take

    def taking(table: ResumptionTable, sm_id: str, user: str) -> Any:
        asked.set()
        return take(table, sm_id, user)

    monkeypatch.setattr(ResumptionTable, "take", taking)
    return asked


async def _alice_with_sm(server: RunningServer) -> tuple[SMClient, Inbox]:
    """Accounts alice and bob; alice online with stream management, her presence sent."""
    await server.create_user("alice")
    await server.create_user("bob")
    alice = SMClient(server.host, server.port, "alice", cert=server.cert)
    inbox = Inbox(alice)
    await alice.start()
    await alice.send("<presence/>")
    return alice, inbox


async def test_resumption_after_a_socket_abort_delivers_everything_exactly_once(
    roost_server: RunningServer,
) -> None:
    alice, inbox = await _alice_with_sm(roost_server)
    bob = await _logged_in(roost_server, "bob")
    for i in range(10):
        await bob.send(_chat("alice@localhost/sm", f"m{i}"))
    await inbox.until(lambda: len(inbox.bodies) == 10)
    alice.abort()  # no </stream:stream>, no FIN handshake: the phone went into a tunnel
    for i in range(10, 30):
        await bob.send(_chat("alice@localhost/sm", f"m{i}"))
    # A round trip to the server: bob's messages have all been handled (queued for alice).
    await bob.send(PING)
    await bob.expect("iq")
    assert await alice.resume()
    await inbox.until(lambda: len(inbox.bodies) >= 30)
    await alice.close()
    assert inbox.bodies == [f"m{i}" for i in range(30)]


async def test_a_resumption_waits_for_what_the_old_connection_sent_to_be_handled(
    roost_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stanza read on the old connection is still being handled when the client resumes:
    # <resumed h='N'/> must count it once it is done, not leave it out (the client would send
    # it again, it would be delivered twice, and the two counts would disagree from then on).
    server = roost_server.server
    alice, _inbox = await _alice_with_sm(roost_server)
    bob = await _logged_in(roost_server, "bob")
    held, release, detached = (asyncio.Event() for _ in range(3))
    asked = _resume_asked(monkeypatch)

    def hold(stanza: Element, session: Any) -> Any:
        if stanza.find_text("body") != "held":
            return stanza
        held.set()

        async def later() -> None:
            await release.wait()
            pending = server.router.route(stanza, session)
            if pending is not None:
                await pending

        return Stop(later())

    server.hooks.add("c2s.inbound", hold, priority=1)
    server.hooks.add("c2s.detached", lambda session: detached.set())
    await alice.send(_chat("bob@localhost/r", "held"))
    await asyncio.wait_for(held.wait(), TIMEOUT)
    alice.abort()
    await asyncio.wait_for(detached.wait(), TIMEOUT)
    resuming = asyncio.ensure_future(alice.resume())
    await asyncio.wait_for(asked.wait(), TIMEOUT)  # the server is answering the <resume/>
    release.set()
    assert await asyncio.wait_for(resuming, TIMEOUT)
    assert alice.server_acked == 2  # her presence and the held message: nothing to send again
    await alice.send(_chat("bob@localhost/r", "after"))
    bodies = [(await bob.expect("message")).find_text("body") for _ in range(2)]
    assert bodies == ["held", "after"]


@pytest.mark.roost_config(sm_timeout=60)
async def test_unacknowledged_messages_go_offline_when_the_window_closes(
    roost_server: RunningServer,
) -> None:
    alice, inbox = await _alice_with_sm(roost_server)
    await inbox.until(lambda: inbox.presences >= 1)  # available: our own presence came back
    alice.abort()
    bob = await _logged_in(roost_server, "bob")
    for i in range(5):
        await bob.send(_chat("alice@localhost", f"late {i}"))
    await bob.send(PING)
    await bob.expect("iq")
    # The resumption window closes (a virtual clock: expiry as of a minute from now).
    now = asyncio.get_running_loop().time()
    for expired in roost_server.server.resumption.expired(now + 61):
        expired.expire()
    await roost_server.server.settle()
    stored = await roost_server.server.storage.fetch_offline("alice@localhost")
    bodies = [m.stanza for m in stored]
    assert [b for b in bodies if "late" in b] == bodies
    assert len(bodies) == 5
    # And alice, coming back without resuming, gets them.
    again = await _logged_in(roost_server, "alice", resource="new")
    await again.send("<presence/>")
    got: list[str | None] = []
    while len(got) < 5:
        message = await again.expect("message")
        got.append(message.find_text("body"))
    assert got == [f"late {i}" for i in range(5)]


async def test_messages_written_but_unacknowledged_go_offline_when_the_stream_closes(
    roost_server: RunningServer,
) -> None:
    # Written to the client, they wait in the queue as the bytes written: routed again, they
    # are elements once more, with everything they carried.
    alice, inbox = await _alice_with_sm(roost_server)
    await inbox.until(lambda: inbox.presences >= 1)
    bob = await _logged_in(roost_server, "bob")
    for i in range(3):  # fewer than the server's ack request interval: none asked for
        await bob.send(
            f"<message to='alice@localhost/sm' type='chat' id='w{i}'><body>written {i}</body>"
            f"<thread>t&amp;{i}</thread><x xmlns='urn:example:x' a='&lt;{i}'/></message>"
        )
    await inbox.until(lambda: len(inbox.bodies) == 3)
    await alice.close()  # without acknowledging them: the session ends
    await roost_server.server.settle()
    again = await _logged_in(roost_server, "alice", resource="new")
    await again.send("<presence/>")
    for i in range(3):
        message = await again.expect("message")
        assert message.attrs["id"] == f"w{i}"
        assert message.find_text("body") == f"written {i}"
        assert message.find_text("thread") == f"t&{i}"
        extra = message.find("x", "urn:example:x")
        assert extra is not None
        assert extra.attrs["a"] == f"<{i}"


async def test_a_new_login_replaces_a_detached_session_of_the_same_full_jid(
    roost_server: RunningServer,
) -> None:
    # The phone lost its connection and the app started afresh, binding the same resource
    # without resuming: the detached session is replaced (RFC 6120 §7.7.2.2), and what was
    # queued for it reaches the new one rather than being lost with the old connection.
    alice, inbox = await _alice_with_sm(roost_server)
    await inbox.until(lambda: inbox.presences >= 1)
    detached = asyncio.Event()
    roost_server.server.hooks.add("c2s.detached", lambda session: detached.set())
    alice.abort()
    await asyncio.wait_for(detached.wait(), TIMEOUT)
    bob = await _logged_in(roost_server, "bob")
    await bob.send(_chat("alice@localhost", "while away"))
    await bob.send(PING)
    await bob.expect("iq")
    again = await _logged_in(roost_server, "alice", resource="sm")
    await again.send("<presence/>")
    message = await again.expect("message")
    assert message.find_text("body") == "while away"


@pytest.mark.roost_config(sm_timeout=60)
async def test_a_resume_after_the_window_closed_on_a_busy_session_gets_its_final_count(
    roost_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window closed while a stanza alice sent was still being handled: the <failed/> of a
    # later <resume/> still says how many of her stanzas were handled, once that is known, so
    # that she sends again only what the server never handled.
    server = roost_server.server
    alice, _inbox = await _alice_with_sm(roost_server)
    held, release = held_in_hook(server, "c2s.inbound", lambda s: s.find_text("body") == "held")
    detached, asked = asyncio.Event(), _resume_asked(monkeypatch)
    server.hooks.add("c2s.detached", lambda session: detached.set())
    await alice.send(_chat("bob@localhost", "held"))
    await asyncio.wait_for(held.wait(), TIMEOUT)
    alice.abort()
    await asyncio.wait_for(detached.wait(), TIMEOUT)
    now = asyncio.get_running_loop().time()
    for session in server.resumption.expired(now + 61):
        session.expire()
    resuming = asyncio.ensure_future(alice.resume())
    await asyncio.wait_for(asked.wait(), TIMEOUT)  # the server is answering the <resume/>
    release.set()
    assert not await asyncio.wait_for(resuming, TIMEOUT)
    # <failed h='2'/>: her presence and the held message were handled, and the new session
    # she opened has nothing to send again (without h, it would send both again).
    assert not alice.unacked
