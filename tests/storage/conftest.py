"""Fixtures shared by the storage tests.

``storage`` is parametrized by backend, so that :mod:`tests.storage.test_storage` and
:mod:`tests.storage.test_archive` are the contract every backend meets: SQLite in the test's
temporary directory, and PostgreSQL in a database of the session's own
(:func:`roost.testing.postgres.scratch_database`), emptied before each test. The PostgreSQL
cases carry ``pytest.mark.postgres`` (``-m 'not postgres'`` leaves them out); without a
reachable server they are skipped, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from roost.storage import Storage
from roost.storage.postgres import PostgresStorage
from roost.storage.sqlite import SQLiteStorage
from roost.testing.postgres import (
    PostgresUnavailable,
    empty_tables,
    scratch_database,
    unavailable,
)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL database for this session, dropped at its end."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_database())
        except PostgresUnavailable as error:
            unavailable(error)
        yield url


@pytest.fixture
async def postgres_storage(postgres_url: str) -> AsyncIterator[PostgresStorage]:
    """An opened PostgreSQL store with empty tables, closed after the test."""
    store = PostgresStorage(postgres_url)
    await store.open()
    try:
        await empty_tables(postgres_url)
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    """An opened SQLite store in the test's directory, closed after the test."""
    store = SQLiteStorage(tmp_path / "roost.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest) -> Storage:
    """An opened, empty store of each backend."""
    store: Storage = request.getfixturevalue(f"{request.param}_storage")
    return store
