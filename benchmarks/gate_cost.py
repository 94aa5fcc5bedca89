"""What a closed gate costs on the call path: setups for ``roost bench run``.

    roost bench run -s 5 'async with contextlib.nullcontext(): pass'
    roost bench run -s 5 --setup benchmarks.gate_cost:bare_gate \\
        'async with state.call("roost.db"): pass'
    roost bench run -s 5 --setup benchmarks.gate_cost:storage_gate \\
        'async with state.call("roost.db"): pass'
    roost bench run -s 5 --setup benchmarks.gate_cost:gated_store \\
        'await state.call(benchmarks.gate_cost.nothing)'
    roost bench run -s 5 'await benchmarks.gate_cost.nothing()'
    roost bench run -s 5 --setup benchmarks.gate_cost:sqlite_store \
        --teardown benchmarks.gate_cost:close 'await state.user_exists("alice@localhost")'
    roost bench run -s 5 --setup benchmarks.gate_cost:gated_sqlite \
        --teardown benchmarks.gate_cost:close 'await state.user_exists("alice@localhost")'

``bare_gate`` has no call timeout; ``storage_gate`` has the server's default policy, whose
5 s call timeout costs an ``asyncio.timeout`` per call; ``gated_store`` is the storage
wrapper's path (the gate, the timeout and one more coroutine frame) around a coroutine that
does nothing, to compare with awaiting that coroutine directly. The last two put a real
SQLite read (one per call: no group commit to share) behind and without the storage gate.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from roost.config import ServerConfig
from roost.gate import Gate, Policy, policy_of
from roost.gate.storage import GatedStorage
from roost.storage.sqlite import SQLiteStorage


async def nothing() -> None:
    return None


def bare_gate() -> Gate:
    return Gate("storage", Policy())


def storage_gate() -> Gate:
    return Gate("storage", policy_of(ServerConfig()))


class _Wrapper:
    """The gated store's call path, around any coroutine function (the store is never used)."""

    def __init__(self) -> None:
        self._store = GatedStorage(SQLiteStorage(Path("/nonexistent/roost.db")), storage_gate())

    def call(self, function: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        return self._store._call(function)


def gated_store() -> _Wrapper:
    return _Wrapper()


async def sqlite_store() -> SQLiteStorage:
    store = SQLiteStorage(Path(tempfile.mkdtemp(prefix="roost-gate-bench-")) / "roost.db")
    await store.open()
    return store


async def gated_sqlite() -> GatedStorage:
    return GatedStorage(await sqlite_store(), storage_gate())


async def close(store: SQLiteStorage | GatedStorage) -> None:
    await store.close()
