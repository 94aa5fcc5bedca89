"""Versioned schema migrations: the mechanism every SQL backend of roost shares.

A database's schema evolves by numbered steps. Each step is one SQL file in this package named
``<dialect>_<NNNN>_<summary>.sql`` (``sqlite_0001_initial.sql``): the dialect says which backend
runs it, the number is the schema version the database reaches once the step has run, and
versions of one dialect are ``1..N`` without gaps. A release only ever appends steps; a step that
shipped is never edited, because databases in the field have already run it.

Why versions rather than "create what is missing": a change such as adding a column, splitting a
table or backfilling a value must run exactly once, in order, on every existing database, and a
single integer recorded inside the database says which steps already ran. Why refuse a database
that is *newer* than the code: an older roost would misread, and could corrupt, a schema it does
not know, so it stops with a clear message instead of guessing (see :func:`plan`).

The mechanism is split in two so that backends with different drivers reuse it:

- this module, driver-agnostic, loads a dialect's steps (:func:`load`) and decides which of them
  a database at a given version needs (:func:`plan`);
- the backend applies them. It must, in one transaction that also keeps other processes from
  migrating at the same time, read the recorded version, run the planned steps in order, record
  the new version, and commit. The SQLite backend records the version in ``PRAGMA user_version``
  under ``BEGIN IMMEDIATE``; a PostgreSQL backend would use its own ``postgresql_*.sql`` files,
  a ``schema_version`` table and an advisory lock, calling the same two functions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from roost.storage.base import StorageError

_FILE_NAME = re.compile(r"(?P<dialect>[a-z0-9]+)_(?P<version>\d{4})_(?P<summary>\w+)\.sql")


@dataclass(slots=True, frozen=True)
class Migration:
    """One step of a dialect's schema: running ``sql`` brings a database to ``version``."""

    version: int
    summary: str
    sql: str


def load(dialect: str) -> tuple[Migration, ...]:
    """Every migration of ``dialect``, in version order.

    Raises :class:`ValueError` when the files are not numbered ``1..N``: that is a packaging
    mistake, which should fail every test rather than reach a database.
    """
    found: list[Migration] = []
    for entry in resources.files(__name__).iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None or match["dialect"] != dialect:
            continue
        found.append(
            Migration(int(match["version"]), match["summary"], entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"{dialect} migrations are not numbered 1..{len(found)}: {versions}")
    return tuple(found)


def latest(migrations: Sequence[Migration]) -> int:
    """The schema version a database has once every migration has run."""
    return migrations[-1].version if migrations else 0


def plan(migrations: Sequence[Migration], current: int, *, database: str) -> list[Migration]:
    """The migrations a database now at version ``current`` still needs, in order.

    ``database`` names it in the error raised (a :class:`StorageError`) when its version is newer
    than any this code knows, i.e. it was written by a later release of roost.
    """
    known = latest(migrations)
    if current > known:
        raise StorageError(
            f"{database} has schema version {current}, but this release of roost only knows "
            f"versions up to {known}: it was written by a newer roost; run that release instead"
        )
    if current < 0:
        raise StorageError(f"{database} has an invalid schema version {current}")
    return [migration for migration in migrations if migration.version > current]
