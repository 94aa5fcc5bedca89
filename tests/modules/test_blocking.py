"""Blocklists (XEP-0191): matching, items, the error, and the in-memory cache."""

from __future__ import annotations

import pytest

from roost.modules import blocking
from roost.modules.blocking import BLOCKING, BlockingModule, blocked_error, blocks, parse_items
from roost.testing import RunningServer
from roost.xmpp.errors import StanzaError
from roost.xmpp.jid import parse_jid
from roost.xmpp.parser import parse_element

pytestmark = pytest.mark.roost_config(modules=["blocking"])


@pytest.mark.parametrize(
    ("item", "sender", "blocked"),
    [
        # §5: user@domain/resource matches only that resource
        ("romeo@montague.net/orchard", "romeo@montague.net/orchard", True),
        ("romeo@montague.net/orchard", "romeo@montague.net/garden", False),
        ("romeo@montague.net/orchard", "romeo@montague.net", False),
        # user@domain matches the user and every resource
        ("romeo@montague.net", "romeo@montague.net", True),
        ("romeo@montague.net", "romeo@montague.net/garden", True),
        ("romeo@montague.net", "juliet@montague.net", False),
        # domain/resource matches only that
        ("montague.net/bot", "montague.net/bot", True),
        ("montague.net/bot", "montague.net", False),
        ("montague.net/bot", "romeo@montague.net/bot", False),
        # domain matches the domain, its resources and its users
        ("montague.net", "montague.net", True),
        ("montague.net", "montague.net/bot", True),
        ("montague.net", "romeo@montague.net/garden", True),
        ("montague.net", "romeo@capulet.net", False),
        ("montague.net", "sub.montague.net", False),
    ],
)
def test_jids_are_matched_in_the_privacy_list_order(item: str, sender: str, blocked: bool) -> None:
    assert blocks(frozenset({item}), parse_jid(sender)) is blocked


def test_an_empty_list_blocks_nobody() -> None:
    assert not blocks(frozenset(), parse_jid("anyone@anywhere"))


def test_items_are_normalised_and_kept_once_in_order() -> None:
    payload = parse_element(
        f"<block xmlns='{BLOCKING}'><item jid='Romeo@Montague.NET'/><item jid='b.example'/>"
        "<item jid='romeo@montague.net'/></block>"
    )
    assert parse_items(payload) == ["romeo@montague.net", "b.example"]


@pytest.mark.parametrize(
    "item", ["<item/>", "<item jid=''/>", "<item jid='@x'/>", "<item jid='a/'/>"]
)
def test_an_item_that_is_not_a_jid_is_malformed(item: str) -> None:
    payload = parse_element(f"<block xmlns='{BLOCKING}'><item jid='ok@x'/>{item}</block>")
    with pytest.raises(StanzaError) as failure:
        parse_items(payload)
    assert failure.value.condition == "jid-malformed"


def test_the_blocked_error_carries_the_application_condition() -> None:
    original = parse_element(
        "<message from='juliet@capulet.com/balcony' to='romeo@montague.net' id='1'>"
        "<body>Can you hear me now?</body></message>"
    )
    assert blocked_error().reply_to(original).to_str() == (
        "<message id='1' type='error' to='juliet@capulet.com/balcony' from='romeo@montague.net'>"
        "<body>Can you hear me now?</body><error type='cancel'>"
        "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "<blocked xmlns='urn:xmpp:blocking:errors'/></error></message>"
    )


def _module(server: RunningServer) -> BlockingModule:
    module = server.server.modules["blocking"]
    assert isinstance(module, BlockingModule)
    return module


async def test_a_list_is_read_from_storage_once_then_from_memory(
    roost_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await roost_server.create_user("alice")
    storage = roost_server.server.storage
    await storage.block(user, ["iago@localhost"])
    reads: list[str] = []
    read = storage.get_blocklist

    async def counted(jid: str) -> list[str]:
        reads.append(jid)
        return await read(jid)

    monkeypatch.setattr(storage, "get_blocklist", counted)
    module = _module(roost_server)
    assert module.cached(user) is None
    assert await module.blocklist(user) == frozenset({"iago@localhost"})
    assert await module.blocklist(user) == frozenset({"iago@localhost"})
    assert reads == [user]


async def test_lists_of_users_without_a_session_are_kept_within_a_bound(
    roost_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocking, "RECENT", 3)
    module = _module(roost_server)
    users = [await roost_server.create_user(f"user{i}") for i in range(5)]
    for user in users:
        await module.blocklist(user)
    assert [module.cached(u) is not None for u in users] == [False, False, True, True, True]


async def test_block_and_unblock_change_storage_and_memory_together(
    roost_server: RunningServer,
) -> None:
    user = await roost_server.create_user("alice")
    module = _module(roost_server)
    storage = roost_server.server.storage
    await module.block(user, ["iago@localhost", "spam.example"])
    assert module.cached(user) == frozenset({"iago@localhost", "spam.example"})
    assert await storage.get_blocklist(user) == ["iago@localhost", "spam.example"]
    await module.unblock(user, ["iago@localhost", "never@blocked"])
    assert module.cached(user) == frozenset({"spam.example"})
    assert await storage.get_blocklist(user) == ["spam.example"]
    await module.unblock(user, None)
    assert module.cached(user) == frozenset()
    assert await storage.get_blocklist(user) == []
