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


def open_storage(data_dir: Path) -> Storage:
    """The store of a deployment whose data lives in ``data_dir``, not yet opened.

    Creates the directory, readable by its owner only (it holds credentials), when missing.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return SQLiteStorage(data_dir / DATABASE_FILE)
