"""The worker loop: call the runner as fast as possible and publish how many calls finished.

Both worker kinds run this coroutine: an asyncio task in the benchmarking process
(``mode="tasks"``) and the single task of each worker process (``mode="processes"``).

**Batches.** Checking a clock, publishing the counter or yielding to the event loop on every
call would cost more than a fast runner itself (a call to an empty function is ~30 ns, a
``perf_counter()`` is ~50 ns, an ``await asyncio.sleep(0)`` several microseconds). So the
runner is called in batches whose size adapts, doubling or halving, until a batch takes about
``SLICE`` seconds; bookkeeping happens once per batch and costs well under 1 % of it. A slow
runner ends up with batches of one call.

**Publishing.** After each batch the worker publishes its running total through a callback
(a list slot for tasks, a shared-memory word for processes). The sampler reads totals between
batches (tasks: the event loop only switches at the yield; processes: a published total is at
most one batch old), so a sample is off by at most one batch and the error cancels out in the
next sample.

**Yielding.** Sync runners in tasks mode yield after every batch, otherwise the sampler task
(and every other worker) would never run. Async runners always yield after a batch too: an
``async def`` that never actually suspends would otherwise monopolise the loop just the same.
A sync runner alone in a worker process has nothing to yield to and runs uninterrupted.

**Sync or async** is decided by the first call: if it returns an awaitable, the worker awaits
it and awaits every later call's result. Probing the result, rather than asking
``inspect.iscoroutinefunction``, also covers ``functools.partial`` objects, decorated
functions and callables whose ``__call__`` is async.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from itertools import repeat
from time import perf_counter
from typing import Any

# Target duration of one batch, in seconds. Long enough to amortise bookkeeping, short enough
# that the sampler in tasks mode is never held up for long.
SLICE = 0.002
MAX_BATCH = 1 << 24


def next_batch(batch: int, elapsed: float) -> int:
    if elapsed < SLICE / 2:
        return min(batch * 2, MAX_BATCH)
    if elapsed > SLICE * 2 and batch > 1:
        return batch // 2
    return batch


async def run_worker(
    func: Callable[..., Any],
    state: object,
    *,
    takes_state: bool,
    publish: Callable[[int], None],
    stopped: Callable[[], bool],
    cooperative: bool,
) -> None:
    """Loop ``func`` until ``stopped()`` is true (or the task is cancelled)."""
    first = func(state) if takes_state else func()
    is_async = inspect.isawaitable(first)
    if is_async:
        await first
    done = 1
    publish(done)
    batch = 1
    # The four loops differ only in 'await' and the argument: choosing once, outside the hot
    # loop, keeps both a branch and a '*args' call out of every iteration.
    while not stopped():
        started = perf_counter()
        if is_async:
            if takes_state:
                for _ in repeat(None, batch):
                    await func(state)
            else:
                for _ in repeat(None, batch):
                    await func()
        elif takes_state:
            for _ in repeat(None, batch):
                func(state)
        else:
            for _ in repeat(None, batch):
                func()
        done += batch
        publish(done)
        batch = next_batch(batch, perf_counter() - started)
        if cooperative or is_async:
            await asyncio.sleep(0)


async def call_hook(func: Callable[..., Any], state: object, *, takes_state: bool) -> Any:
    """Call a setup or teardown hook, awaiting its result if it is awaitable."""
    result = func(state) if takes_state else func()
    if inspect.isawaitable(result):
        result = await result
    return result
