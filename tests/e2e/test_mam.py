"""Message archives (XEP-0313) with slixmpp, and exact wire checks with RawClient.

Queries flush the archive's write buffer first, so a test can query as soon as a message was
delivered; a message that must *not* be archived is followed by one that must, and the test
waits for that one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from roost.config import ServerConfig
from roost.modules.mam_protocol import FORWARD, MAM, MAM_EXTENDED, SID, parse_datetime
from roost.storage.base import ArchiveQuery
from roost.storage.sqlite import SQLiteStorage
from roost.testing import RunningServer, running_server
from roost.testing.rawclient import RawClient
from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.parser import parse_element
from roost.xmpp.rsm import RSM
from tests.e2e.conftest import TIMEOUT, Client, Connect

MODULES = [*ServerConfig().modules, "mam"]
MAX_PAGE = ServerConfig().mam_max_page
PLUGINS = ("xep_0030", "xep_0199", "xep_0313", "xep_0359", "xep_0441", "xep_0085", "xep_0334")

pytestmark = pytest.mark.roost_config(modules=MODULES)


async def two_users(
    server: RunningServer, connect: Connect, *names: str
) -> tuple[list[str], list[Client]]:
    jids = [await server.create_user(name) for name in names]
    clients = [await connect(f"{jid}/r", plugins=PLUGINS) for jid in jids]
    for client in clients:
        client.send_presence()
    return jids, clients


async def archive(client: Client, *, reverse: bool = False, **kwargs: Any) -> list[Any]:
    """Every result of a query, paging with RSM as slixmpp does (100 a page)."""

    async def collect() -> list[Any]:
        mam = client.plugin["xep_0313"]
        return [m async for m in mam.iterate(rsm={"max": 100}, reverse=reverse, **kwargs)]

    return await asyncio.wait_for(collect(), TIMEOUT * 3)


def bodies(results: Sequence[Any]) -> list[str]:
    return [str(r["mam_result"]["forwarded"]["stanza"]["body"]) for r in results]


def result_ids(results: Sequence[Any]) -> list[str]:
    return [str(r["mam_result"]["id"]) for r in results]


async def received(client: Client, count: int) -> list[Any]:
    return [await client.next_message() for _ in range(count)]


# -- archiving ----------------------------------------------------------------------------------


async def test_both_archives_hold_the_conversation_and_stanza_ids_are_archive_ids(
    roost_server: RunningServer, connect: Connect
) -> None:
    (alice_jid, bob_jid), (alice, bob) = await two_users(roost_server, connect, "alice", "bob")
    for i in range(3):
        alice.send_message(mto=bob_jid, mbody=f"a{i}", mtype="chat")
        got = await bob.next_message()
        bob.send_message(mto=got["from"], mbody=f"b{i}", mtype="chat")
        await alice.next_message()
    conversation = ["a0", "b0", "a1", "b1", "a2", "b2"]
    for client, jid in ((alice, alice_jid), (bob, bob_jid)):
        results = await archive(client)
        assert bodies(results) == conversation
        assert all(r["from"].bare == jid for r in results)
        senders = [r["mam_result"]["forwarded"]["stanza"]["from"].bare for r in results]
        assert senders == [alice_jid, bob_jid] * 3


async def test_received_messages_carry_the_recipients_archive_id(
    roost_server: RunningServer, connect: Connect
) -> None:
    (_alice_jid, bob_jid), (alice, bob) = await two_users(roost_server, connect, "alice", "bob")
    for i in range(5):
        alice.send_message(mto=bob_jid, mbody=f"m{i}", mtype="chat")
    got = await received(bob, 5)
    sids = [(m["stanza_id"]["by"], m["stanza_id"]["id"]) for m in got]
    assert all(by == bob_jid for by, _ in sids)
    assert len({sid for _, sid in sids}) == 5
    bob_results = await archive(bob)
    assert result_ids(bob_results) == [sid for _, sid in sids]
    # Alice's copies, in her own archive, have the same ids: one message, one id.
    assert result_ids(await archive(alice)) == [sid for _, sid in sids]


async def _alice_to_bob(server: RunningServer) -> tuple[str, RawClient, RawClient]:
    """Alice and Bob logged in as raw clients, Bob available: (Bob's JID, Alice, Bob)."""
    alice_jid = await server.create_user("alice")
    bob_jid = await server.create_user("bob")
    alice = await RawClient.logged_in(server.host, server.port, alice_jid, cert=server.cert)
    bob = await RawClient.logged_in(server.host, server.port, bob_jid, cert=server.cert)
    await bob.send("<presence/>")
    await bob.expect("presence")
    return bob_jid, alice, bob


async def test_a_forged_stanza_id_is_replaced(roost_server: RunningServer) -> None:
    bob_jid, alice, bob = await _alice_to_bob(roost_server)
    await alice.send(
        f"<message to='{bob_jid}' type='chat'><body>trust me</body>"
        f"<stanza-id xmlns='{SID}' by='{bob_jid}' id='forged'/>"
        f"<stanza-id xmlns='{SID}' by='someone@else.example' id='kept'/></message>"
    )
    message = await bob.expect("message")
    ids = {(s.attrs["by"], s.attrs["id"]) for s in message.elements("stanza-id", SID)}
    assert ("someone@else.example", "kept") in ids
    ours = [sid for by, sid in ids if by == bob_jid]
    assert len(ours) == 1
    assert ours[0] != "forged"


async def test_a_real_archive_id_from_a_client_is_removed_whatever_the_message(
    roost_server: RunningServer,
) -> None:
    # Only the server stamps ids of its users' archives: a client that repeats one of them
    # (here one of bob's own ids, spelled another way, or on a message that is not archived)
    # neither keeps the message out of the archive nor makes bob's client take it for the
    # message it already has.
    bob_jid, alice, bob = await _alice_to_bob(roost_server)
    await alice.send(f"<message to='{bob_jid}' type='chat'><body>first</body></message>")
    first = await bob.expect("message")
    (real,) = [s.attrs["id"] for s in first.elements("stanza-id", SID)]
    for by, kind, body in (
        (bob_jid, "chat", "again"),
        (bob_jid.upper(), "chat", "shouting"),
        (bob_jid, "headline", "news"),
    ):
        await alice.send(
            f"<message to='{bob_jid}' type='{kind}'><body>{body}</body>"
            f"<stanza-id xmlns='{SID}' by='{by}' id='{real}'/></message>"
        )
        got = await bob.expect("message")
        assert got.find_text("body") == body
        assert real not in [s.attrs["id"] for s in got.elements("stanza-id", SID)]
    mam = roost_server.server.modules["mam"]
    await mam.flush()  # type: ignore[attr-defined]
    page = await roost_server.server.storage.query_archive(bob_jid, ArchiveQuery())
    bodies = [parse_element(m.stanza).find_text("body") for m in page.messages]
    assert bodies == ["first", "again", "shouting"]
    assert len({m.id for m in page.messages}) == 3


async def test_messages_to_an_offline_user_are_archived_and_keep_their_stanza_id(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    bob_jid = await roost_server.create_user("bob")
    alice = await connect(f"{alice_jid}/r", plugins=PLUGINS)
    for i in range(3):
        alice.send_message(mto=bob_jid, mbody=f"while away {i}", mtype="chat")
    await alice.plugin["xep_0199"].ping(roost_server.domain)  # handled in order: all stored
    bob = await connect(f"{bob_jid}/r", plugins=PLUGINS)
    bob.send_presence()
    got = await received(bob, 3)
    results = await archive(bob)
    assert bodies(results) == [f"while away {i}" for i in range(3)]
    assert [m["stanza_id"]["id"] for m in got] == result_ids(results)


async def test_chat_states_receipts_and_no_store_hints_are_not_archived(
    roost_server: RunningServer, connect: Connect
) -> None:
    (_alice_jid, bob_jid), (alice, bob) = await two_users(roost_server, connect, "alice", "bob")
    alice.send_message(mto=bob_jid, mtype="chat")  # empty: no body
    composing = alice.make_message(mto=bob_jid, mtype="chat")
    composing["chat_state"] = "composing"
    composing.send()
    secret = alice.make_message(mto=bob_jid, mbody="off the record", mtype="chat")
    secret["no-store"] = True
    secret.send()
    transient = alice.make_message(mto=bob_jid, mbody="not kept either", mtype="chat")
    transient["no-permanent-store"] = True
    transient.send()
    alice.send_message(mto=bob_jid, mbody="one for the groupies", mtype="headline")
    alice.send_message(mto=bob_jid, mbody="kept", mtype="chat")
    while (await bob.next_message())["body"] != "kept":
        pass
    assert bodies(await archive(bob)) == ["kept"]
    assert bodies(await archive(alice)) == ["kept"]


async def test_a_message_to_oneself_is_archived_once(
    roost_server: RunningServer, connect: Connect
) -> None:
    alice_jid = await roost_server.create_user("alice")
    alice = await connect(f"{alice_jid}/r", plugins=PLUGINS)
    alice.send_presence()
    alice.send_message(mto=alice_jid, mbody="note to self", mtype="chat")
    await alice.next_message()
    assert bodies(await archive(alice)) == ["note to self"]
    assert bodies(await archive(alice, with_jid=JID(alice_jid))) == ["note to self"]


# -- paging -------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_paging_through_a_thousand_messages_both_ways(
    roost_server: RunningServer, connect: Connect
) -> None:
    (_alice_jid, bob_jid), (alice, bob) = await two_users(roost_server, connect, "alice", "bob")
    sent = [f"message {i:04d}" for i in range(1000)]
    for body in sent:
        alice.send_message(mto=bob_jid, mbody=body, mtype="chat")
    await received(bob, len(sent))
    forward = await archive(bob)
    assert bodies(forward) == sent
    backward = await archive(bob, reverse=True)
    assert bodies(backward) == sent[::-1]
    assert result_ids(backward) == result_ids(forward)[::-1]
    assert len(set(result_ids(forward))) == len(sent)
    # By hand: the first page, and the end.
    mam = bob.plugin["xep_0313"]
    first = await mam.retrieve(rsm={"max": 10})
    assert bodies(first["mam"]["results"]) == sent[:10]
    assert first["mam_fin"]["complete"] in ("false", False)
    assert first["mam_fin"]["rsm"]["count"] == "1000"
    end = await mam.retrieve(rsm={"max": 10, "after": result_ids(forward)[-1]})
    assert end["mam"]["results"] == []
    assert end["mam_fin"]["complete"] in ("true", True)


@pytest.mark.roost_config(modules=MODULES, mam_max_page=MAX_PAGE)
async def test_no_page_is_larger_than_the_server_maximum(
    roost_server: RunningServer, connect: Connect
) -> None:
    (_alice_jid, bob_jid), (alice, bob) = await two_users(roost_server, connect, "alice", "bob")
    for i in range(MAX_PAGE + 20):
        alice.send_message(mto=bob_jid, mbody=f"m{i}", mtype="chat")
    await received(bob, MAX_PAGE + 20)
    page = await alice.plugin["xep_0313"].retrieve(rsm={"max": 100_000})
    assert len(page["mam"]["results"]) == MAX_PAGE
    assert page["mam_fin"]["complete"] in ("false", False)
    unbounded = await alice.plugin["xep_0313"].retrieve()  # no <set/> at all
    assert len(unbounded["mam"]["results"]) == MAX_PAGE


# -- filters ------------------------------------------------------------------------------------


async def test_with_start_and_end_filters(roost_server: RunningServer, connect: Connect) -> None:
    jids, clients = await two_users(roost_server, connect, "alice", "bob", "carol")
    (alice_jid, bob_jid, carol_jid), (alice, bob, carol) = jids, clients
    for i in range(6):
        contact, client = (bob_jid, bob) if i % 2 == 0 else (carol_jid, carol)
        alice.send_message(mto=contact, mbody=f"m{i}", mtype="chat")
        await client.next_message()
    assert bodies(await archive(alice, with_jid=JID(carol_jid))) == ["m1", "m3", "m5"]
    assert bodies(await archive(bob, with_jid=JID(alice_jid))) == ["m0", "m2", "m4"]
    # A full JID matches only what was to or from that very resource: Bob received from
    # alice@localhost/r, while Alice wrote to Carol's bare JID.
    assert bodies(await archive(bob, with_jid=JID(f"{alice_jid}/r"))) == ["m0", "m2", "m4"]
    assert bodies(await archive(bob, with_jid=JID(f"{alice_jid}/other"))) == []
    assert bodies(await archive(alice, with_jid=JID(f"{carol_jid}/r"))) == []
    # Stamps read from results select exactly those messages again.
    everything = await archive(alice)
    stamps = [r["mam_result"]["forwarded"]["delay"]["stamp"] for r in everything]
    start, end = stamps[1], stamps[4]
    assert isinstance(start, datetime)
    window = await archive(alice, start=start, end=end)
    assert bodies(window) == ["m1", "m2", "m3", "m4"]
    assert bodies(await archive(alice, start=stamps[5])) == ["m5"]
    assert bodies(await archive(alice, end=stamps[0])) == ["m0"]
    assert bodies(await archive(alice, start=end, end=start)) == []


async def test_before_id_after_id_and_ids_fields(roost_server: RunningServer) -> None:
    owner, client = await _raw_user(roost_server, "alice")
    await _fill(roost_server, client, owner, 6)
    results, _ = await raw_query(client, "")
    ids = [_result_id(r) for r in results]
    form = _form(("after-id", [ids[1]]), ("before-id", [ids[4]]))
    results, _ = await raw_query(client, form)
    assert [_result_id(r) for r in results] == ids[2:4]
    results, _ = await raw_query(client, _form(("ids", [ids[5], ids[0]])))
    assert [_result_id(r) for r in results] == [ids[0], ids[5]]
    # A flipped page holds the same messages, newest first.
    flip = f"<set xmlns='{RSM}'><max>3</max></set><flip-page/>"
    results, iq = await raw_query(client, flip)
    assert [_result_id(r) for r in results] == ids[2::-1]
    fin = iq.find("fin", MAM)
    assert fin is not None
    rsm = fin.find("set", RSM)  # first and last stay in archive order
    assert rsm is not None
    assert (rsm.find_text("first"), rsm.find_text("last")) == (ids[0], ids[2])


# -- preferences --------------------------------------------------------------------------------


async def test_prefs_never_stops_archiving_and_the_stanza_id(
    roost_server: RunningServer, connect: Connect
) -> None:
    (_alice_jid, bob_jid), (alice, bob) = await two_users(roost_server, connect, "alice", "bob")
    await bob.plugin["xep_0441"].set_preferences(default="never", always=[], never=[])
    alice.send_message(mto=bob_jid, mbody="unrecorded", mtype="chat")
    got = await bob.next_message()
    assert not got.xml.findall(f"{{{SID}}}stanza-id")
    assert bodies(await archive(bob)) == []
    assert bodies(await archive(alice)) == ["unrecorded"]  # Alice's preferences are hers


async def test_prefs_lists_override_the_default_and_round_trip(
    roost_server: RunningServer, connect: Connect
) -> None:
    jids, clients = await two_users(roost_server, connect, "alice", "bob", "carol")
    (_alice_jid, bob_jid, carol_jid), (alice, bob, carol) = jids, clients
    prefs = bob.plugin["xep_0441"]
    assert await prefs.get_preferences() == ("always", set(), set())
    await prefs.set_preferences(default="always", always=[], never=[JID(carol_jid)])
    assert await prefs.get_preferences() == ("always", set(), {JID(carol_jid)})
    carol.send_message(mto=bob_jid, mbody="from carol", mtype="chat")
    await bob.next_message()
    alice.send_message(mto=bob_jid, mbody="from alice", mtype="chat")
    await bob.next_message()
    bob.send_message(mto=carol_jid, mbody="to carol", mtype="chat")
    await carol.next_message()
    assert bodies(await archive(bob)) == ["from alice"]


async def test_prefs_roster_archives_contacts_only(
    roost_server: RunningServer, connect: Connect
) -> None:
    jids, clients = await two_users(roost_server, connect, "alice", "bob", "carol")
    (alice_jid, bob_jid, _carol_jid), (alice, bob, carol) = jids, clients
    await bob.plugin["xep_0441"].set_preferences(default="roster", always=[], never=[])
    await bob.update_roster(alice_jid, name="Alice")
    alice.send_message(mto=bob_jid, mbody="from a contact", mtype="chat")
    await bob.next_message()
    carol.send_message(mto=bob_jid, mbody="from a stranger", mtype="chat")
    await bob.next_message()
    assert bodies(await archive(bob)) == ["from a contact"]


# -- wire details and errors --------------------------------------------------------------------


async def _raw_user(server: RunningServer, name: str) -> tuple[str, RawClient]:
    jid = await server.create_user(name)
    client = await RawClient.logged_in(
        server.host, server.port, jid, cert=server.cert, resource="r"
    )
    return jid, client


async def _fill(server: RunningServer, client: RawClient, owner: str, count: int) -> None:
    """``count`` messages from ``client`` to a fresh contact (offline), archived for the sender."""
    contact = await server.create_user(f"contact{count}")
    for i in range(count):
        await client.send(f"<message to='{contact}' type='chat'><body>m{i}</body></message>")


_QUERIES = iter(range(1_000_000))


async def raw_query(
    client: RawClient, inner: str, to: str | None = None, kind: str = "set"
) -> tuple[list[Element], Element]:
    """Send a query and collect (result messages, the IQ that ends it)."""
    number = next(_QUERIES)
    address = f" to='{to}'" if to else ""
    await client.send(
        f"<iq type='{kind}' id='q{number}'{address}>"
        f"<query xmlns='{MAM}' queryid='f{number}'>{inner}</query></iq>"
    )
    results: list[Element] = []
    while True:
        element = await client.next_element()
        if element.name == "iq" and element.attrs.get("id") == f"q{number}":
            return results, element
        if element.name == "message" and element.find("result", MAM) is not None:
            result = element.find("result", MAM)
            assert result is not None
            assert result.attrs["queryid"] == f"f{number}"
            results.append(element)


def _form(*fields: tuple[str, Sequence[str]], form_type: str = "submit") -> str:
    rendered = "".join(
        f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>"
        for var, values in fields
    )
    return (
        f"<x xmlns='jabber:x:data' type='{form_type}'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{rendered}</x>"
    )


def _result_id(message: Element) -> str:
    result = message.find("result", MAM)
    assert result is not None
    return result.attrs["id"]


def _condition(iq: Element) -> str:
    assert iq.attrs.get("type") == "error", iq
    error = iq.find("error")
    assert error is not None
    return next(c.name for c in error.elements() if c.xmlns == ns.STANZAS and c.name != "text")


async def test_results_and_fin_on_the_wire(roost_server: RunningServer) -> None:
    owner, client = await _raw_user(roost_server, "alice")
    await _fill(roost_server, client, owner, 3)
    results, iq = await raw_query(client, f"<set xmlns='{RSM}'><max>2</max></set>")
    assert iq.attrs["type"] == "result"
    assert [r.attrs["to"] for r in results] == [client.jid] * 2
    assert all(r.attrs["from"] == owner for r in results)
    result = results[0].find("result", MAM)
    assert result is not None
    forwarded = result.find("forwarded", FORWARD)
    assert forwarded is not None
    delay = forwarded.find("delay", ns.DELAY)
    original = forwarded.find("message", ns.CLIENT)
    assert delay is not None
    assert original is not None
    parse_datetime(delay.attrs["stamp"])  # a valid XEP-0082 date
    assert original.attrs["from"] == client.jid
    assert original.find_text("body") == "m0"
    fin = iq.find("fin", MAM)
    assert fin is not None
    assert fin.attrs["complete"] == "false"
    rsm = fin.find("set", RSM)
    assert rsm is not None
    assert rsm.find_text("first") == _result_id(results[0])
    assert rsm.find_text("last") == _result_id(results[1])
    assert rsm.find_text("count") == "3"
    _, iq = await raw_query(
        client, f"<set xmlns='{RSM}'><after>{_result_id(results[1])}</after></set>"
    )
    fin = iq.find("fin", MAM)
    assert fin is not None
    assert fin.attrs["complete"] == "true"


async def test_an_empty_archive_answers_with_a_count_only(roost_server: RunningServer) -> None:
    _, client = await _raw_user(roost_server, "alice")
    results, iq = await raw_query(client, "")
    assert results == []
    fin = iq.find("fin", MAM)
    assert fin is not None
    assert fin.attrs["complete"] == "true"
    rsm = fin.find("set", RSM)
    assert rsm is not None
    assert [(c.name, c.text) for c in rsm.elements()] == [("count", "0")]


@pytest.mark.parametrize(
    ("inner", "condition"),
    [
        (_form(form_type="form"), "bad-request"),
        (
            "<x xmlns='jabber:x:data' type='submit'><field><value>1</value></field></x>",
            "bad-request",
        ),
        (
            "<x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>urn:example</value></field></x>",
            "bad-request",
        ),
        (_form(("start", ["yesterday"])), "bad-request"),
        (_form(("start", ["2024-13-40T00:00:00Z"])), "bad-request"),
        (_form(("end", ["2024-01-01T00:00:00"])), "bad-request"),  # no time zone
        (_form(("with", ["a@b@c"])), "bad-request"),
        (_form(("with", ["bob@localhost", "carol@localhost"])), "bad-request"),
        (_form(("ids", [f"x{i}" for i in range(MAX_PAGE + 1)])), "bad-request"),
        (f"<set xmlns='{RSM}'><max>ten</max></set>", "bad-request"),
        (f"<set xmlns='{RSM}'><max>-1</max></set>", "bad-request"),
        (f"<set xmlns='{RSM}'><after/></set>", "bad-request"),
        (_form(("fulltext", ["hello"])), "feature-not-implemented"),
        (f"<set xmlns='{RSM}'><index>3</index></set>", "feature-not-implemented"),
        (f"<set xmlns='{RSM}'><after>nope</after></set>", "item-not-found"),
        (f"<set xmlns='{RSM}'><before>nope</before></set>", "item-not-found"),
        (_form(("after-id", ["nope"])), "item-not-found"),
        (_form(("before-id", ["nope"])), "item-not-found"),
        (_form(("ids", ["nope"])), "item-not-found"),
    ],
)
async def test_bad_queries_are_refused(
    roost_server: RunningServer, inner: str, condition: str
) -> None:
    _, client = await _raw_user(roost_server, "alice")
    results, iq = await raw_query(client, inner)
    assert results == []
    assert _condition(iq) == condition


async def test_another_users_archive_is_forbidden(roost_server: RunningServer) -> None:
    await roost_server.create_user("bob")
    _, client = await _raw_user(roost_server, "alice")
    _, iq = await raw_query(client, "", to=f"bob@{roost_server.domain}")
    assert _condition(iq) == "forbidden"


async def test_the_query_form_lists_the_fields(roost_server: RunningServer) -> None:
    _, client = await _raw_user(roost_server, "alice")
    _, iq = await raw_query(client, "", kind="get")
    query = iq.find("query", MAM)
    assert query is not None
    form = query.find("x", "jabber:x:data")
    assert form is not None
    assert form.attrs["type"] == "form"
    fields = {f.attrs["var"]: f.attrs.get("type") for f in form.elements("field")}
    assert fields == {
        "FORM_TYPE": "hidden",
        "with": "jid-single",
        "start": "text-single",
        "end": "text-single",
        "before-id": "text-single",
        "after-id": "text-single",
        "ids": "list-multi",
    }


async def test_metadata_names_the_first_and_last_message(roost_server: RunningServer) -> None:
    owner, client = await _raw_user(roost_server, "alice")
    await client.send(f"<iq type='get' id='md0'><metadata xmlns='{MAM}'/></iq>")
    empty = await client.expect("iq")
    metadata = empty.find("metadata", MAM)
    assert metadata is not None
    assert list(metadata.elements()) == []
    await _fill(roost_server, client, owner, 4)
    results, _ = await raw_query(client, "")
    await client.send(f"<iq type='get' id='md1'><metadata xmlns='{MAM}'/></iq>")
    answer = await client.expect("iq")
    metadata = answer.find("metadata", MAM)
    assert metadata is not None
    start, end = metadata.find("start", MAM), metadata.find("end", MAM)
    assert start is not None
    assert end is not None
    assert start.attrs["id"] == _result_id(results[0])
    assert end.attrs["id"] == _result_id(results[-1])
    parse_datetime(end.attrs["timestamp"])


async def test_malformed_prefs_are_refused(roost_server: RunningServer) -> None:
    _, client = await _raw_user(roost_server, "alice")
    for number, prefs in enumerate(
        [
            f"<prefs xmlns='{MAM}'/>",
            f"<prefs xmlns='{MAM}' default='sometimes'/>",
            f"<prefs xmlns='{MAM}' default='always'><never><jid>a@b@c</jid></never></prefs>",
        ]
    ):
        await client.send(f"<iq type='set' id='p{number}'>{prefs}</iq>")
        assert _condition(await client.expect("iq")) == "bad-request"


async def test_disco_on_the_account_advertises_mam_and_stanza_ids(
    roost_server: RunningServer, connect: Connect
) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(jid, plugins=PLUGINS)
    info = await client.plugin["xep_0030"].get_info(jid=jid)
    features = set(info["disco_info"]["features"])
    assert {MAM, MAM_EXTENDED, SID} <= features


async def test_an_iq_error_from_slixmpp_is_item_not_found(
    roost_server: RunningServer, connect: Connect
) -> None:
    jid = await roost_server.create_user("alice")
    client = await connect(jid, plugins=PLUGINS)
    with pytest.raises(IqError) as caught:
        await client.plugin["xep_0313"].retrieve(rsm={"after": "no-such-id"})
    assert caught.value.condition == "item-not-found"


# -- durability ---------------------------------------------------------------------------------


async def test_stopping_the_server_writes_every_buffered_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "roost"
    async with running_server(data_dir, modules=MODULES) as server:
        alice_jid = await server.create_user("alice")
        bob_jid = await server.create_user("bob")
        bob = await RawClient.logged_in(server.host, server.port, bob_jid, cert=server.cert)
        await bob.send("<presence/>")
        await bob.expect("presence")
        alice = await RawClient.logged_in(server.host, server.port, alice_jid, cert=server.cert)
        burst = "".join(
            f"<message to='{bob_jid}' type='chat'><body>{i}</body></message>" for i in range(200)
        )
        await alice.send(burst)
        for _ in range(200):
            await bob.expect("message")
        # No query (which would flush): the server stops with records still buffered.
    storage = SQLiteStorage(data_dir / "roost.db")
    await storage.open()
    try:
        for owner in (alice_jid, bob_jid):
            page = await storage.query_archive(owner, ArchiveQuery(limit=1000))
            texts = [parse_element(m.stanza).find_text("body") for m in page.messages]
            assert texts == [str(i) for i in range(200)]
    finally:
        await storage.close()
