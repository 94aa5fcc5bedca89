"""The store behind its gate: every call passes it, failures are told from answers, and errors
come out as StorageErrors that clients can be answered with."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import pytest

from roost.gate import Gate, GateOpen, Policy
from roost.gate.storage import (
    GatedStorage,
    StorageUnavailable,
    database_name,
    is_storage_failure,
    storage_stanza_error,
)
from roost.gate.testing import VirtualClock
from roost.storage.base import Storage, StorageError, UnknownArchiveId
from roost.storage.sqlite import SQLiteStorage

UNGATED = {"open", "close"}
GATED = sorted(name for name in Storage.__abstractmethods__ if name not in UNGATED)


def mock_store() -> Any:
    inner = AsyncMock(spec=SQLiteStorage)
    inner.name = "sqlite"
    inner.path = Path("/data/roost.db")
    return inner


def dummy_arguments(name: str) -> list[Any]:
    parameters = list(inspect.signature(getattr(GatedStorage, name)).parameters.values())[1:]
    return [object() for _ in parameters]


def test_every_method_of_the_interface_is_implemented() -> None:
    assert not GatedStorage.__abstractmethods__
    for name in Storage.__abstractmethods__:
        assert getattr(GatedStorage, name) is not getattr(Storage, name), name


@pytest.mark.parametrize("name", GATED)
async def test_every_call_goes_through_the_gate(name: str) -> None:
    inner = mock_store()
    gate = Gate("storage", clock=VirtualClock())
    storage = GatedStorage(inner, gate)
    arguments = dummy_arguments(name)
    await getattr(storage, name)(*arguments)
    getattr(inner, name).assert_awaited_once_with(*arguments)
    assert gate.statistics()[0]["calls"] == 1
    gate.force(None, "open")
    with pytest.raises(StorageUnavailable) as raised:
        await getattr(storage, name)(*arguments)
    assert isinstance(raised.value.__cause__, GateOpen)
    getattr(inner, name).assert_awaited_once()  # not asked again


async def test_opening_and_closing_are_never_refused() -> None:
    inner = mock_store()
    gate = Gate("storage", clock=VirtualClock())
    gate.force(None, "open")
    storage = GatedStorage(inner, gate)
    await storage.open()
    await storage.close()
    inner.open.assert_awaited_once()
    inner.close.assert_awaited_once()


def test_the_partition_is_the_database_file() -> None:
    storage = GatedStorage(mock_store(), Gate("storage"))
    assert storage.partition == "roost.db"
    assert storage.name == "sqlite"
    assert repr(storage).endswith("partition='roost.db'>")
    other = AsyncMock(spec=Storage)
    other.name = "memory"
    assert database_name(other) == "memory"


def integrity_error() -> StorageError:
    error = StorageError("store_offline: FOREIGN KEY constraint failed")
    error.__cause__ = sqlite3.IntegrityError("FOREIGN KEY constraint failed")
    return error


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (StorageError("disk I/O error"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (integrity_error(), False),
        (UnknownArchiveId("x"), False),
        (ValueError("bad argument"), False),
    ],
)
def test_failures_of_the_store_are_told_from_its_answers(exc: Exception, failure: bool) -> None:
    assert is_storage_failure(exc) is failure


async def test_a_client_cannot_trip_the_gate_with_writes_for_a_deleted_account() -> None:
    inner = mock_store()
    inner.store_offline.side_effect = integrity_error()
    gate = Gate("storage", Policy(consecutive_failures=2), clock=VirtualClock())
    storage = GatedStorage(inner, gate)
    for _ in range(5):
        with pytest.raises(StorageError):
            await storage.store_offline("gone@localhost", "<message/>", 0.0)
    assert gate.state("roost.db") == "closed"


async def test_failing_calls_open_the_gate_and_later_calls_fail_fast() -> None:
    inner = mock_store()
    inner.user_exists.side_effect = StorageError("database is locked")
    clock = VirtualClock()
    gate = Gate("storage", Policy(consecutive_failures=3, open_for=5.0), clock=clock)
    storage = GatedStorage(inner, gate)
    for _ in range(3):
        with pytest.raises(StorageError, match="locked"):
            await storage.user_exists("a@localhost")
    with pytest.raises(StorageUnavailable) as raised:
        await storage.user_exists("a@localhost")
    assert raised.value.retry_after == pytest.approx(5.0)
    assert "3 failures in a row" in str(raised.value)
    assert inner.user_exists.await_count == 3


async def test_a_store_that_hangs_times_out_as_unavailable() -> None:
    inner = mock_store()

    async def hang(jid: str) -> bool:
        await asyncio.Event().wait()
        return True

    inner.user_exists.side_effect = hang
    gate = Gate("storage", Policy(call_timeout=0.01, consecutive_failures=1))
    storage = GatedStorage(inner, gate)
    with pytest.raises(StorageUnavailable, match=r"no answer within 0\.01 s"):
        await storage.user_exists("a@localhost")
    assert gate.state("roost.db") == "open"


def test_clients_are_told_to_wait() -> None:
    unavailable = storage_stanza_error(StorageUnavailable("gated", 4.2))
    assert (unavailable.condition, unavailable.error_type) == ("resource-constraint", "wait")
    assert unavailable.text == "storage is unavailable; try again in 5 s"
    failed = storage_stanza_error(StorageError("disk I/O error"))
    assert (failed.condition, failed.error_type) == ("internal-server-error", "wait")
    assert "disk" not in (failed.text or "")  # nothing of the inside leaks to clients


async def test_a_real_sqlite_store_behind_a_gate(tmp_path: Path) -> None:
    inner = SQLiteStorage(tmp_path / "roost.db")
    gate = Gate("storage", clock=VirtualClock())
    storage = GatedStorage(inner, gate)
    await storage.open()
    try:
        assert await storage.create_user("alice@localhost", [])
        assert await storage.user_exists("alice@localhost")
        assert await storage.schema_version() > 0
    finally:
        await storage.close()
    with pytest.raises(StorageError):  # closed: the store says so, and that is a failure
        await storage.user_exists("alice@localhost")
    [row] = gate.statistics()
    assert (row["partition"], row["calls"], row["failures"]) == ("roost.db", 4, 1)
