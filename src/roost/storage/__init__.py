"""Durable state of roost: the :class:`Storage` interface and the choice of a backend.

Protocol code imports the interface and its records from here, and gets its store from
:func:`open_storage`, so that it never depends on a particular backend.
"""

from __future__ import annotations

from pathlib import Path

from roost.storage.base import (
    OfflineMessage,
    Roster,
    RosterItem,
    ScramCredentials,
    Storage,
    StorageError,
)
from roost.storage.sqlite import SQLiteStorage

__all__ = [
    "OfflineMessage",
    "Roster",
    "RosterItem",
    "ScramCredentials",
    "Storage",
    "StorageError",
    "open_storage",
]

DATABASE_FILE = "roost.db"


def open_storage(data_dir: Path, *, url: str | None = None, thread_nice: int = 10) -> Storage:
    """The store of a deployment whose data lives in ``data_dir``, not yet opened.

    With a ``url`` (the ``storage.url`` setting, ``postgresql://...``), the PostgreSQL database
    it names; without one, SQLite in ``data_dir``, which is created, readable by its owner only
    (it holds credentials), when missing. Raises :class:`StorageError` for a URL of another
    kind. ``thread_nice`` is the SQLite storage thread's priority offset (the
    ``storage.thread_nice`` setting; see :mod:`roost.storage.sqlite_thread`).
    """
    if url:
        from roost.storage.postgres import URL_SCHEMES, PostgresStorage, redact_url

        scheme = url.partition("://")[0].lower()
        if scheme not in URL_SCHEMES:
            raise StorageError(
                f"unsupported storage URL {redact_url(url)!r}: expected "
                + " or ".join(f"{known}://..." for known in URL_SCHEMES)
            )
        return PostgresStorage(url)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return SQLiteStorage(data_dir / DATABASE_FILE, thread_nice=thread_nice)
