"""Micro-benchmarks in continuous mode: how many operations per second does this code do?

The model (after erlperf)
-------------------------
A *job* runs ``concurrency`` workers, each calling the runner in a tight loop and counting
the calls that finished. A sampler, running beside the workers, reads the job's total count
every ``sample_duration`` seconds; the difference between two readings is one **sample**.
Samples are taken, ``warmup`` of them are thrown away, then ``samples`` of them are kept
(defaults: 3 samples of 1 s, no warm-up, one worker).

We divide each counter delta by the *measured* length of its interval (``time.perf_counter``
at both readings) instead of by the nominal ``sample_duration``: the sampler is an ordinary
task and may wake late (a sync runner holds the event loop for up to one batch, the OS may
deschedule us), and a late reading would otherwise count a longer interval as a nominal one.
So every sample is a rate in operations per second, and the throughput (QPS) is the mean of
the samples. *Time per operation* is ``concurrency / QPS``: the wall time one worker spends
on one operation, the latency a caller would see.

With ``cv`` set, sampling continues past the minimum until the coefficient of variation of
the last ``samples`` samples drops below ``cv`` (or ``max_samples`` measured samples were
taken, default ten times ``samples``); the report is computed on that last window, the rest
counting as warm-up. The schedule of readings is absolute (``start + k * duration``), so
lateness does not accumulate; after a reading more than a whole interval late, the schedule
restarts from that reading instead of firing a burst of short catch-up samples.

A slow runner (longer than a sample) yields samples of zero and then a spike, exactly as a
counter would show it: pick a ``sample_duration`` several times longer than one operation.

Workers
-------
``mode="tasks"`` (default) runs the workers as asyncio tasks in one event loop, the sampler
beside them; this is how roost's own code runs, so it measures async code (awaiting a
coroutine of the router, the parser, the storage) under realistic scheduling. Sync runners
are called in short batches between yields (see ``roost.bench.workers``); more than one sync
worker merely takes turns on one thread, and ``time_per_op`` shows it.

``mode="processes"`` runs each worker in its own process (``roost.bench.processes``) for
CPU-bound code that the GIL would otherwise serialise. The runner crosses the process
boundary as a string, so it must be a ``'module:callable'``, a module-level function or a
source string; setup and teardown run inside each worker process.

Comparing and squeezing
-----------------------
``compare`` runs several targets **one after another** with the same settings and reports
each one's QPS relative to the fastest. Running them at the same time would make them split
one Python thread (tasks) or the machine's cores (processes), measuring the contention
rather than the code.

``squeeze`` looks for the concurrency at which throughput stops growing. It measures
``min`` workers, then adds workers (``next = ceil(current * multiplier) + step``, defaults
``+1``), keeping one job and growing it rather than restarting it per level. A level is the
new best only if it beats the best so far by more than ``tolerance`` (relative, default 5 %);
after ``threshold`` consecutive levels that do not (default 3), or at ``max``, it stops and
reports the best level. The tolerance is roost's addition: past the true ceiling extra
workers add nothing but noise, and a plain "greater than" would crown whichever level drew
the luckiest noise. Slow but real growth still registers, because each level is compared
with the best level, not with its predecessor.

Why not pyperf
--------------
pyperf answers a different question: it calibrates a loop count, times that many calls in a
series of freshly spawned worker processes (its ``Runner`` parses ``sys.argv`` and re-runs
the calling script as the workers), and reports time per loop. Even its async entry point,
``Runner.bench_async_func``, awaits the function in an event loop pyperf creates inside its
worker, one call at a time. It has no concurrent workers sharing the caller's event loop, no
counters read while the code runs, and no concurrency sweep, which is the whole of this
model. What it would contribute is the statistics, and the stdlib ``statistics`` module
covers those (``roost.bench.stats``). So this module uses nothing from pyperf and roost does
not depend on it.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import math
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

from roost.bench import stats
from roost.bench.errors import BenchmarkError
from roost.bench.results import CompareResult, RunResult, SqueezeResult
from roost.bench.targets import (
    Hook,
    Resolved,
    Target,
    display_name,
    importable_spec,
    resolve_hook,
    resolve_target,
)
from roost.bench.workers import call_hook, run_worker

Mode = Literal["tasks", "processes"]
MODES: tuple[Mode, ...] = ("tasks", "processes")
# How many measured samples a cv-driven run may take, per requested sample, unless told.
CV_SAMPLE_FACTOR = 10
DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class Plan:
    """How to sample; validated on construction so bad settings fail before anything runs."""

    samples: int = 3
    warmup: int = 0
    sample_duration: float = 1.0
    cv: float | None = None
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if self.warmup < 0:
            raise ValueError(f"warmup must not be negative, got {self.warmup}")
        if not (self.sample_duration > 0 and math.isfinite(self.sample_duration)):
            raise ValueError(
                f"sample_duration must be a positive number of seconds, got {self.sample_duration}"
            )
        if self.cv is not None:
            if not self.cv > 0:
                raise ValueError(f"cv must be positive, got {self.cv}")
            if self.samples < 2:
                raise ValueError("cv needs at least 2 samples: one sample has no variation")
        if self.max_samples is not None:
            if self.cv is None:
                raise ValueError("max_samples only applies together with cv")
            if self.max_samples < self.samples:
                raise ValueError(
                    f"max_samples ({self.max_samples}) must be at least samples ({self.samples})"
                )

    @property
    def sample_bound(self) -> int:
        """The most measured samples to take (only a cv target takes more than ``samples``)."""
        if self.cv is None:
            return self.samples
        return self.max_samples or self.samples * CV_SAMPLE_FACTOR


def _check_mode(mode: str) -> Mode:
    for known in MODES:
        if mode == known:
            return known
    raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")


def _check_count(what: str, value: int, least: int) -> None:
    if value < least:
        raise ValueError(f"{what} must be at least {least}, got {value}")


# --- jobs -----------------------------------------------------------------------------------


class Job(Protocol):
    """Workers looping one runner, as the sampler sees them."""

    async def start(self) -> None:
        """Run the setup hook (where the mode runs it)."""

    async def grow(self, workers: int) -> None:
        """Start workers until there are ``workers`` of them, all running."""

    def read(self) -> int:
        """Total operations completed by all workers so far."""

    def check(self) -> None:
        """Raise ``BenchmarkError`` if a worker has failed."""

    async def close(self) -> None:
        """Stop every worker and run the teardown hook."""


@dataclass(frozen=True, slots=True)
class Spec:
    """A validated request: what to run, with which hooks, in which mode."""

    name: str
    target: Target
    setup: Hook | None
    teardown: Hook | None
    mode: Mode


def prepare(target: Target, setup: Hook | None, teardown: Hook | None, mode: str) -> Spec:
    """Resolve everything once up front, so errors surface before any measuring starts."""
    checked = _check_mode(mode)
    name = display_name(target)  # before any conversion, so both modes name it alike
    has_setup = setup is not None
    resolve_target(target, has_setup=has_setup)
    if setup is not None:
        resolve_hook(setup, role="setup", has_setup=True)
    if teardown is not None:
        resolve_hook(teardown, role="teardown", has_setup=has_setup)
    if checked == "processes":
        # Processes receive strings; convert now so a lambda fails here, not in a child.
        target = importable_spec(target)
        setup = None if setup is None else importable_spec(setup)
        teardown = None if teardown is None else importable_spec(teardown)
    return Spec(name, target, setup, teardown, checked)


def _failure(what: str, exc: BaseException) -> BenchmarkError:
    details = "".join(traceback.format_exception(exc))
    return BenchmarkError(f"{what} raised {type(exc).__name__}: {exc}", details)


def _never() -> bool:
    return False


class TaskJob:
    """Workers as asyncio tasks in the running event loop; setup/teardown run once per job."""

    def __init__(self, spec: Spec) -> None:
        has_setup = spec.setup is not None
        self._target: Resolved = resolve_target(spec.target, has_setup=has_setup)
        self._setup = (
            None if spec.setup is None else resolve_hook(spec.setup, role="setup", has_setup=True)
        )
        self._teardown = (
            None
            if spec.teardown is None
            else resolve_hook(spec.teardown, role="teardown", has_setup=has_setup)
        )
        self._state: object = None
        self._counts: list[int] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._setup is not None:
            try:
                self._state = await call_hook(self._setup.func, None, takes_state=False)
            except Exception as exc:
                raise _failure(f"setup hook {self._setup.name}", exc) from exc

    async def grow(self, workers: int) -> None:
        for index in range(len(self._tasks), workers):
            self._counts.append(0)
            task = asyncio.create_task(
                run_worker(
                    self._target.func,
                    self._state,
                    takes_state=self._target.takes_state,
                    publish=functools.partial(self._counts.__setitem__, index),
                    stopped=_never,
                    cooperative=True,
                ),
                name=f"roost-bench-worker-{index}",
            )
            self._tasks.append(task)
        # Let the new tasks make their first call before the sampler's baseline reading.
        await asyncio.sleep(0)
        self.check()

    def read(self) -> int:
        return sum(self._counts)

    def check(self) -> None:
        for task in self._tasks:
            if not task.done():
                continue
            if task.cancelled():
                raise BenchmarkError(f"a worker running {self._target.name} was cancelled")
            exc = task.exception()
            if exc is None:
                raise BenchmarkError(f"a worker running {self._target.name} stopped early")
            raise _failure(self._target.name, exc) from exc

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        # Workers that already failed have their exception retrieved by gather, so asyncio
        # does not log it a second time; check() has reported it.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._teardown is not None:
            try:
                await call_hook(
                    self._teardown.func, self._state, takes_state=self._teardown.takes_state
                )
            except Exception as exc:
                raise _failure(f"teardown hook {self._teardown.name}", exc) from exc


@asynccontextmanager
async def open_job(spec: Spec) -> AsyncIterator[Job]:
    job: Job
    if spec.mode == "processes":
        # Imported here: multiprocessing machinery is only paid for when asked for.
        from roost.bench.processes import ProcessJob

        def as_string(hook: Hook | None) -> str | None:
            return None if hook is None else importable_spec(hook)  # already checked

        job = ProcessJob(
            spec.name, importable_spec(spec.target), as_string(spec.setup), as_string(spec.teardown)
        )
    else:
        job = TaskJob(spec)
    await job.start()
    try:
        yield job
    except BaseException:
        try:
            await job.close()
        except Exception:
            pass  # the failure already propagating is the one worth reporting
        raise
    await job.close()


# --- sampling -------------------------------------------------------------------------------


async def measure(job: Job, plan: Plan, *, name: str, mode: Mode, concurrency: int) -> RunResult:
    """Sample a running job according to ``plan``; see the module docstring for the rules."""
    rates: list[float] = []
    deltas: list[int] = []
    cv_reached: bool | None = None
    before, then = job.read(), perf_counter()
    deadline = then
    while True:
        deadline += plan.sample_duration
        delay = deadline - perf_counter()
        if delay < 0:
            deadline, delay = perf_counter(), 0.0
        await asyncio.sleep(delay)
        job.check()
        total, now = job.read(), perf_counter()
        rates.append((total - before) / max(now - then, 1e-9))
        deltas.append(total - before)
        before, then = total, now
        measured = len(rates) - plan.warmup
        if measured < plan.samples:
            continue
        if plan.cv is None:
            break
        cv_reached = stats.cv(rates[-plan.samples :]) < plan.cv
        if cv_reached or measured >= plan.sample_bound:
            break
    split = len(rates) - plan.samples
    return RunResult(
        name=name,
        mode=mode,
        concurrency=concurrency,
        sample_duration=plan.sample_duration,
        samples=tuple(rates[split:]),
        warmup_samples=tuple(rates[:split]),
        operations=sum(deltas[split:]),
        cv_target=plan.cv,
        cv_reached=cv_reached,
    )


# --- the API --------------------------------------------------------------------------------


async def run_async(
    target: Target,
    *,
    concurrency: int = 1,
    samples: int = 3,
    warmup: int = 0,
    sample_duration: float = 1.0,
    cv: float | None = None,
    max_samples: int | None = None,
    setup: Hook | None = None,
    teardown: Hook | None = None,
    mode: Mode = "tasks",
) -> RunResult:
    """Measure one target's throughput at a fixed concurrency (continuous mode).

    In ``mode="tasks"`` the workers run in the *current* event loop, so an async target can
    use objects bound to it.
    """
    _check_count("concurrency", concurrency, 1)
    plan = Plan(samples, warmup, sample_duration, cv, max_samples)
    spec = prepare(target, setup, teardown, mode)
    async with open_job(spec) as job:
        await job.grow(concurrency)
        return await measure(job, plan, name=spec.name, mode=spec.mode, concurrency=concurrency)


async def compare_async(
    targets: Sequence[Target],
    *,
    concurrency: int = 1,
    samples: int = 3,
    warmup: int = 0,
    sample_duration: float = 1.0,
    cv: float | None = None,
    max_samples: int | None = None,
    setup: Hook | None = None,
    teardown: Hook | None = None,
    mode: Mode = "tasks",
) -> CompareResult:
    """Measure several targets one after another with the same settings and hooks."""
    if isinstance(targets, str) or not targets:
        raise ValueError("compare needs a non-empty sequence of targets")
    _check_count("concurrency", concurrency, 1)
    plan = Plan(samples, warmup, sample_duration, cv, max_samples)
    specs = [prepare(target, setup, teardown, mode) for target in targets]
    results: list[RunResult] = []
    for spec in specs:
        async with open_job(spec) as job:
            await job.grow(concurrency)
            results.append(
                await measure(job, plan, name=spec.name, mode=spec.mode, concurrency=concurrency)
            )
    return CompareResult(tuple(results))


def next_level(current: int, step: int, multiplier: float) -> int:
    """The concurrency squeeze tries after ``current``: ``ceil(current * multiplier) + step``."""
    return math.ceil(current * multiplier) + step


def default_max_concurrency(mode: Mode) -> int:
    """Squeeze's upper bound when none is given: a safety net, the threshold normally stops."""
    if mode == "processes":
        import os

        return 2 * (os.cpu_count() or 1)
    return 1000


async def squeeze_async(
    target: Target,
    *,
    # 'min' and 'max' shadow the builtins inside this function (use builtins.min), but they
    # are the options' names on the command line, and the API should read the same.
    min: int = 1,
    max: int | None = None,
    step: int = 1,
    multiplier: float = 1.0,
    threshold: int = 3,
    tolerance: float = DEFAULT_TOLERANCE,
    samples: int = 3,
    warmup: int = 0,
    sample_duration: float = 1.0,
    cv: float | None = None,
    max_samples: int | None = None,
    setup: Hook | None = None,
    teardown: Hook | None = None,
    mode: Mode = "tasks",
) -> SqueezeResult:
    """Find the concurrency with the best throughput; see the module docstring.

    The job is grown from level to level, not restarted: in tasks mode the setup hook runs
    once for the whole sweep (workers added later share its state); in processes mode it
    runs in each worker process as that process starts.
    """
    low = min
    checked_mode = _check_mode(mode)
    high = default_max_concurrency(checked_mode) if max is None else max
    _check_count("min", low, 1)
    if high < low:
        raise ValueError(f"max ({high}) must be at least min ({low})")
    _check_count("step", step, 0)
    _check_count("threshold", threshold, 1)
    if not (multiplier >= 1 and math.isfinite(multiplier)):
        raise ValueError(f"multiplier must be at least 1, got {multiplier}")
    if step == 0 and multiplier == 1:
        raise ValueError("step 0 with multiplier 1 would never add a worker")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must not be negative, got {tolerance}")
    plan = Plan(samples, warmup, sample_duration, cv, max_samples)
    spec = prepare(target, setup, teardown, checked_mode)

    levels: list[RunResult] = []
    best: RunResult | None = None
    misses = 0
    concurrency = low
    async with open_job(spec) as job:
        while True:
            await job.grow(concurrency)
            level = await measure(
                job, plan, name=spec.name, mode=spec.mode, concurrency=concurrency
            )
            levels.append(level)
            if best is None or level.qps > best.qps * (1 + tolerance):
                best, misses = level, 0
            else:
                misses += 1
                if misses >= threshold:
                    break
            if concurrency >= high:
                break
            # Clamp so that a multiplier overshooting max still tries max itself.
            concurrency = builtins.min(next_level(concurrency, step, multiplier), high)
    assert best is not None  # the loop measures at least one level
    return SqueezeResult(spec.name, spec.mode, tuple(levels), best)


# --- blocking wrappers ----------------------------------------------------------------------

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _blocking(function: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, _T]:
    """Make a blocking twin of an ``*_async`` function that runs it in a new event loop."""

    @functools.wraps(function)
    def blocking(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop running: the normal case
        else:
            raise RuntimeError(
                f"roost.bench.{function.__name__.removesuffix('_async')}() blocks and cannot "
                f"run inside an event loop; await roost.bench.{function.__name__}() instead"
            )
        # Outside the 'except' block, so failures are not chained to the RuntimeError above.
        return asyncio.run(function(*args, **kwargs))

    blocking.__name__ = blocking.__qualname__ = function.__name__.removesuffix("_async")
    blocking.__doc__ = f"{function.__doc__}\n\nBlocking: runs in a new event loop."
    return blocking


run = _blocking(run_async)
compare = _blocking(compare_async)
squeeze = _blocking(squeeze_async)

__all__ = [
    "MODES",
    "Job",
    "Mode",
    "Plan",
    "compare",
    "compare_async",
    "measure",
    "next_level",
    "open_job",
    "prepare",
    "run",
    "run_async",
    "squeeze",
    "squeeze_async",
]
