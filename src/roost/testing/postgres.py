"""Scratch PostgreSQL databases for tests of the PostgreSQL backend.

A test session creates one database of its own on a PostgreSQL server
(:func:`scratch_database`), named after the process and a random suffix so that sessions
running at once never share one, and drops it at the end. Tests empty its tables before they
start (:func:`empty_tables`), which is much faster than a database per test (creating one
takes a quarter of a second).

The server is ``ROOST_TEST_POSTGRES_URL``, by default ``postgres`` on 127.0.0.1:5432 (its
``postgres`` database is where the scratch databases are created and dropped from). When it
cannot be reached, :func:`scratch_database` raises :class:`PostgresUnavailable`, and
:func:`unavailable` skips the test on a developer's machine but fails it in CI.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from roost.storage.postgres import TABLES, redact_url

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SERVER_URL_VARIABLE = "ROOST_TEST_POSTGRES_URL"
CONNECT_TIMEOUT = 5.0


class PostgresUnavailable(Exception):
    """No PostgreSQL server to test against; the message says why."""


def server_url() -> str:
    """The URL of the maintenance database of the server that tests use."""
    return os.environ.get(SERVER_URL_VARIABLE) or DEFAULT_SERVER_URL


def database_url(url: str, database: str) -> str:
    """``url`` naming ``database`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


@contextmanager
def scratch_database(server: str | None = None) -> Iterator[str]:
    """A new, empty database on ``server`` (default :func:`server_url`), dropped on exit.

    Yields its URL. Runs event loops of its own, so that it can serve a session-wide fixture
    while every test has a loop of its own; :func:`create_database` and :func:`drop_database`
    are the same for a test's own loop.
    """
    url = asyncio.run(create_database(server))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url, server))


async def create_database(server: str | None = None) -> str:
    """Create a database with a name of its own on ``server``; its URL."""
    server = server or server_url()
    name = f"roost_test_{os.getpid()}_{secrets.token_hex(4)}"
    await _administer(server, f'CREATE DATABASE "{name}"')
    return database_url(server, name)


async def drop_database(url: str, server: str | None = None) -> None:
    """Drop the database of ``url``, made by :func:`create_database` on ``server``."""
    name = urlsplit(url).path.lstrip("/")
    # FORCE: a test that failed may have left a connection open.
    await _administer(server or server_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def unavailable(error: PostgresUnavailable) -> NoReturn:
    """Skip the test that needs PostgreSQL; in CI (``CI=true``), where it must run, fail it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {error}")
    pytest.skip(str(error))


async def _administer(server: str, statement: str) -> None:
    try:
        connection = await asyncpg.connect(server, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise PostgresUnavailable(
            f"no PostgreSQL server at {redact_url(server)} ({error}); set "
            f"{SERVER_URL_VARIABLE} to the URL of one's maintenance database"
        ) from error
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def empty_tables(url: str) -> None:
    """Delete every row of roost's tables in the database at ``url`` (migrated already)."""
    # DELETE rather than TRUNCATE: on the few rows a test leaves it takes a millisecond, where
    # TRUNCATE, which gives each table new files, takes around a hundred.
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("; ".join(f"DELETE FROM {table}" for table in reversed(TABLES)))
    finally:
        await connection.close()
