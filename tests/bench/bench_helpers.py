"""Importable targets and hooks for the roost.bench tests.

They live in a module, not in the test files, because ``'module:callable'`` targets and
processes mode need something importable by name: ``tests.bench.bench_helpers`` (pytest puts
the project root on ``sys.path``, and spawned worker processes inherit it).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

# Environment variable naming a file that process-mode hooks append to: worker processes
# cannot report through module globals, and they inherit the environment.
MARK_FILE = "ROOST_BENCH_TEST_MARK_FILE"

calls: list[tuple[str, Any]] = []


def cpu_work() -> int:
    return sum(range(200))


def needs_state(state: dict[str, int]) -> None:
    state["runs"] += 1


def setup_counter() -> dict[str, int]:
    state = {"runs": 0}
    calls.append(("setup", state))
    return state


def teardown_counter(state: dict[str, int]) -> None:
    calls.append(("teardown", state))


async def async_setup() -> dict[str, int]:
    await asyncio.sleep(0)
    return setup_counter()


def limited_setup() -> asyncio.Semaphore:
    # Created by the setup hook, inside the benchmark's event loop.
    return asyncio.Semaphore(4)


async def limited(semaphore: asyncio.Semaphore) -> None:
    """An operation that at most four callers can be inside at once."""
    async with semaphore:
        await asyncio.sleep(0.005)


def _mark(line: str) -> None:
    with open(os.environ[MARK_FILE], "a", encoding="utf-8") as file:
        file.write(line + "\n")


def process_setup() -> int:
    _mark(f"setup {os.getpid()}")
    return 7


def process_runner(state: int) -> int:
    if state != 7:
        raise AssertionError(f"expected the setup state 7, got {state!r}")
    return sum(range(200))


def process_teardown(state: int) -> None:
    _mark(f"teardown {os.getpid()} {state}")


def fails() -> None:
    raise RuntimeError("deliberate failure")
