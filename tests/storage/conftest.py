"""Fixtures shared by the storage tests.

``storage`` is parametrized by backend, so that :mod:`tests.storage.test_storage` is the
contract every backend meets. A backend is one entry of ``BACKENDS``: a factory building an
unopened store from the test's temporary directory, plus marks (a backend needing a server
would carry ``pytest.mark.postgres`` and skip when none is configured).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from roost.storage import Storage
from roost.storage.sqlite import SQLiteStorage

BACKENDS: dict[str, tuple[Callable[[Path], Storage], tuple[pytest.MarkDecorator, ...]]] = {
    "sqlite": (lambda directory: SQLiteStorage(directory / "roost.db"), ()),
}


@pytest.fixture(params=[pytest.param(name, marks=marks) for name, (_, marks) in BACKENDS.items()])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """An opened, empty store of each backend, closed after the test."""
    factory, _ = BACKENDS[request.param]
    store = factory(tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
