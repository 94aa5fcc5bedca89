"""Expiry of offline messages and archived ones, through the live modules and their settings."""

from __future__ import annotations

import time

import pytest

from roost.storage.base import ArchiveQuery, ArchiveRecord
from roost.testing import RunningServer


@pytest.mark.roost_config(offline_expire_after=3600.0)
async def test_offline_messages_past_the_limit_expire(roost_server: RunningServer) -> None:
    alice = await roost_server.create_user("alice")
    storage = roost_server.server.storage
    now = time.time()
    await storage.store_offline(alice, "<message id='old'/>", now - 7200, sender="b@localhost")
    await storage.store_offline(alice, "<message id='new'/>", now - 60, sender="b@localhost")
    offline = roost_server.server.modules["offline"]
    assert await offline.expire(now) == 1  # type: ignore[attr-defined]
    [kept] = await storage.fetch_offline(alice)
    assert kept.stanza == "<message id='new'/>"


async def test_nothing_expires_by_default(roost_server: RunningServer) -> None:
    alice = await roost_server.create_user("alice")
    storage = roost_server.server.storage
    await storage.store_offline(alice, "<message/>", 0.0, sender="b@localhost")
    await storage.archive_messages(
        [ArchiveRecord(alice, 1_000_000, "a", "b@localhost", "in", "<message/>")]
    )
    assert await roost_server.server.modules["offline"].expire() == 0  # type: ignore[attr-defined]
    assert await roost_server.server.modules["mam"].expire() == 0  # type: ignore[attr-defined]
    assert await storage.count_offline(alice) == 1
    assert len((await storage.query_archive(alice, ArchiveQuery())).messages) == 1


@pytest.mark.roost_config(mam_expire_after=86400.0)
async def test_archived_messages_past_the_limit_expire(roost_server: RunningServer) -> None:
    alice = await roost_server.create_user("alice")
    storage = roost_server.server.storage
    now = time.time()
    old, new = int((now - 2 * 86400) * 1e6), int((now - 60) * 1e6)
    await storage.archive_messages(
        [
            ArchiveRecord(alice, old, "old", "b@localhost", "in", "<message id='old'/>"),
            ArchiveRecord(alice, new, "new", "b@localhost", "in", "<message id='new'/>"),
        ]
    )
    assert await roost_server.server.modules["mam"].expire(now) == 1  # type: ignore[attr-defined]
    page = await storage.query_archive(alice, ArchiveQuery())
    assert [m.id for m in page.messages] == ["new"]
