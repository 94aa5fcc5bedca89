"""Worker processes for ``mode="processes"``: one runner loop each, counters in shared memory.

Why processes: the GIL lets one thread run Python at a time, so N asyncio tasks (or threads)
looping a CPU-bound runner measure one core however large N is. N processes measure N cores,
which is what a squeeze of CPU-bound code needs to see.

Start method: **spawn**, on every platform. ``fork`` is faster to start but copies a process
that may hold threads and an event loop (the benchmarking process does), which is unsafe and
deprecated in that situation; start-up is outside the measurement anyway, because sampling
begins only once every worker reports ready. A spawned child inherits the parent's
``sys.path``, so a ``'module:callable'`` the parent can import, the child can too. As with
any spawn-based multiprocessing, a script calling ``roost.bench.run(..., mode="processes")``
must guard its top level with ``if __name__ == "__main__":`` (the child re-imports the main
script); the ``roost`` command and ``python -m roost`` already do.

Shared memory: each worker owns a block of eight 64-bit words (``RawArray``, no lock):
word 0 is its running total of operations, word 1 its ready flag. The worker is the only
writer of its block and the driver only reads, so no lock is needed; an aligned 64-bit store
is one instruction on the 64-bit platforms roost supports. Blocks are 64 bytes apart or more,
so two workers' counters never share a cache line, and a worker publishing its count does
not slow its neighbours down (false sharing). The stop flag is one shared byte written by the
driver only.

Lifecycle of a worker: rebuild the target and hooks from their strings, run ``setup``, set
ready, loop until the stop flag is set, run ``teardown``. Any exception is sent to the driver
as formatted text through a queue, and the worker exits with status 1; the driver notices
the exit at its next sample and raises ``BenchmarkError`` with that text.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from time import perf_counter
from typing import Any

from roost.bench.errors import BenchmarkError
from roost.bench.targets import resolve_hook, resolve_target
from roost.bench.workers import call_hook, run_worker

_BLOCK_WORDS = 8  # 64 bytes: one cache line per worker
_COUNT = 0
_READY = 1
READY_TIMEOUT = 60.0  # spawning and importing; generous for a loaded CI machine
STOP_TIMEOUT = 10.0
_POLL = 0.01


@dataclass(frozen=True, slots=True)
class _Worker:
    process: BaseProcess
    block: Any  # ctypes array of c_uint64 in shared memory


class ProcessJob:
    """A job whose workers are processes; see the module docstring."""

    def __init__(self, name: str, target: str, setup: str | None, teardown: str | None) -> None:
        self._name = name
        self._specs = (target, setup, teardown)
        self._ctx = multiprocessing.get_context("spawn")
        self._stop: Any = self._ctx.RawValue(ctypes.c_bool, False)
        self._errors: Any = self._ctx.Queue()
        self._workers: list[_Worker] = []
        self._reported = False  # a failure already raised by check(), not to repeat in close()

    async def start(self) -> None:
        """Nothing to do: setup runs in each worker process."""

    async def grow(self, workers: int) -> None:
        for index in range(len(self._workers), workers):
            block = self._ctx.RawArray(ctypes.c_uint64, _BLOCK_WORDS)
            process = self._ctx.Process(
                target=worker_main,
                args=(index, *self._specs, block, self._stop, self._errors),
                name=f"roost-bench-worker-{index}",
                daemon=True,
            )
            process.start()
            self._workers.append(_Worker(process, block))
        deadline = perf_counter() + READY_TIMEOUT
        while not all(worker.block[_READY] for worker in self._workers):
            self.check()
            if perf_counter() > deadline:
                raise BenchmarkError(
                    f"worker processes for {self._name} not ready after {READY_TIMEOUT:.0f} s"
                )
            await asyncio.sleep(_POLL)

    def read(self) -> int:
        return sum(int(worker.block[_COUNT]) for worker in self._workers)

    def check(self) -> None:
        for index, worker in enumerate(self._workers):
            code = worker.process.exitcode
            if code is not None:
                self._reported = True
                raise self._failure(index, code)

    def _failure(self, index: int, code: int) -> BenchmarkError:
        try:
            # The worker queued its traceback before exiting; give the pipe a moment.
            failed, details = self._errors.get(timeout=2.0)
        except Exception:
            return BenchmarkError(f"worker process {index} for {self._name} exited ({code})")
        return BenchmarkError(
            f"worker process {failed} failed running {self._name}: "
            f"{details.strip().splitlines()[-1]}",
            details,
        )

    async def close(self) -> None:
        self._stop.value = True
        deadline = perf_counter() + STOP_TIMEOUT
        while any(w.process.exitcode is None for w in self._workers):
            if perf_counter() > deadline:
                break
            await asyncio.sleep(_POLL)
        failure: BenchmarkError | None = None
        for index, worker in enumerate(self._workers):
            if worker.process.exitcode is None:
                # A runner stuck in one long call never sees the stop flag.
                worker.process.terminate()
            worker.process.join(timeout=STOP_TIMEOUT)
            code = worker.process.exitcode
            if code is not None and code > 0 and failure is None and not self._reported:
                failure = self._failure(index, code)  # e.g. the teardown hook raised
        self._errors.close()
        self._errors.join_thread()
        if failure is not None:
            raise failure


# --- inside the worker process --------------------------------------------------------------


def worker_main(
    index: int,
    target: str,
    setup: str | None,
    teardown: str | None,
    block: Any,
    stop: Any,
    errors: Any,
) -> None:
    """Entry point of a worker process (must be importable: spawn pickles it by name)."""
    try:
        asyncio.run(_work(target, setup, teardown, block, stop))
    except KeyboardInterrupt:
        # Ctrl-C reaches the whole process group; the driver handles it, stay quiet.
        return
    except BaseException:
        errors.put((index, traceback.format_exc()))
        errors.close()
        errors.join_thread()
        sys.exit(1)


async def _work(
    target: str, setup: str | None, teardown: str | None, block: Any, stop: Any
) -> None:
    has_setup = setup is not None
    runner = resolve_target(target, has_setup=has_setup)
    setup_hook = None if setup is None else resolve_hook(setup, role="setup", has_setup=True)
    teardown_hook = (
        None if teardown is None else resolve_hook(teardown, role="teardown", has_setup=has_setup)
    )
    state = None
    if setup_hook is not None:
        state = await call_hook(setup_hook.func, None, takes_state=False)
    try:
        block[_READY] = 1

        def publish(total: int) -> None:
            block[_COUNT] = total

        def stopped() -> bool:
            return bool(stop.value)

        await run_worker(
            runner.func,
            state,
            takes_state=runner.takes_state,
            publish=publish,
            stopped=stopped,
            cooperative=False,
        )
    finally:
        if teardown_hook is not None:
            await call_hook(teardown_hook.func, state, takes_state=teardown_hook.takes_state)
