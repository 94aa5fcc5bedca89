"""The asyncio face of a gate: ``async with gate.call(partition):`` and ``await gate.run()``.

:class:`Gate` drives a :class:`~roost.gate.core.GateCore` with a clock: it asks the core to
admit a call, times it, tells the core how it ended, and passes what changed to its listeners.
The clock is injected (``time.monotonic`` by default; tests give a virtual one), and so is
``failure``, which decides whether an exception is the dependency's fault (a failure) or not
(an answer: a lookup that found nothing is a healthy database).

::

    async with gate.call("roost.db"):       # raises GateOpen / GateFull at once when refused
        rows = await db.fetch(...)

    rows = await gate.run("roost.db", db.fetch, query)

With ``call_timeout`` in the policy, the body is cancelled after that many seconds and
``TimeoutError`` comes out of the ``async with`` (a failure). A body cancelled from outside
(its task cancelled) counts as nothing at all. Timeouts are kept by one timer per gate, set
for the earliest deadline of the calls in flight, rather than one per call (as
``asyncio.timeout`` would): arming and cancelling a loop timer costs more than the rest of a
gated call together, and almost every call ends long before its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from roost.gate.core import Change, GateCore, Outcome, Partition
from roost.gate.machine import State
from roost.gate.policy import Policy

log = logging.getLogger("roost.gate")

_P = ParamSpec("_P")
_T = TypeVar("_T")

Clock = Callable[[], float]
Listener = Callable[[Change], object]


def every_exception(exc: BaseException) -> bool:
    """The default ``failure`` predicate: any exception is the dependency's failure."""
    return True


class Gate:
    """One dependency's gate, all partitions. See the module docstring."""

    def __init__(
        self,
        name: str,
        policy: Policy | None = None,
        *,
        clock: Clock = time.monotonic,
        node: str = "",
        failure: Callable[[BaseException], bool] = every_exception,
    ) -> None:
        self.core = GateCore(name, policy, node=node)
        self.clock = clock
        self.failure = failure
        self._listeners: list[Listener] = []
        self._timed: dict[GateCall, float] = {}  # calls with a timeout -> deadline (loop time)
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_loop: asyncio.AbstractEventLoop | None = None

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def policy(self) -> Policy:
        return self.core.policy

    # -- calls -------------------------------------------------------------------------------

    def call(self, partition: str) -> GateCall:
        """An async context manager around one call to ``partition``."""
        return GateCall(self, partition)

    async def run(
        self,
        partition: str,
        function: Callable[_P, Awaitable[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """``await function(*args, **kwargs)`` through the gate."""
        async with GateCall(self, partition):
            return await function(*args, **kwargs)

    def _watch(self, call: GateCall, limit: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        self._timed[call] = deadline
        if self._watchdog is None or self._watchdog_loop is not loop:
            self._watchdog = loop.call_at(deadline, self._sweep)
            self._watchdog_loop = loop

    def _sweep(self) -> None:
        """Cancel the calls past their deadline; come back at the next deadline."""
        self._watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        soonest = None
        for call, deadline in list(self._timed.items()):
            if deadline <= now:
                del self._timed[call]
                call._expire()
            elif soonest is None or deadline < soonest:
                soonest = deadline
        if soonest is not None:
            self._watchdog = loop.call_at(soonest, self._sweep)

    # -- control -----------------------------------------------------------------------------

    def force(
        self,
        partition: str | None,
        mode: str,
        ttl: float | None = None,
        *,
        by: str = "operator",
        node: str = "",
    ) -> None:
        """Force ``partition`` (None: the whole gate) open, closed, or back to auto."""
        self.core.force(partition, mode, ttl, self.clock(), by=by, node=node)
        self.flush()

    def remote(
        self,
        partition: str,
        state: State,
        *,
        node: str,
        trip: Any = None,
        open_for: float = 0.0,
    ) -> None:
        """A peer node reports a trip (``State.OPEN``) or a close of ``partition``."""
        self.core.remote(partition, state, self.clock(), node=node, trip=trip, open_for=open_for)
        self.flush()

    def configure(self, policy: Policy) -> None:
        self.core.configure(policy, self.clock())

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def flush(self) -> None:
        """Hand the core's changes to the listeners (each failure logged, never raised)."""
        for change in self.core.take_changes():
            _log_change(change)
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:
                    log.exception("a listener of gate %s failed on %s", self.name, change)

    # -- introspection -----------------------------------------------------------------------

    def statistics(self) -> list[dict[str, Any]]:
        rows = self.core.statistics(self.clock())
        self.flush()
        return rows

    def state(self, partition: str) -> str:
        """What a caller meets now: closed, open, half-open, forced-open or forced-closed."""
        core = self.core
        core.poll(self.clock())
        self.flush()
        found = core.get(partition)
        override = (found.override if found else None) or core.override
        if override is not None:
            return f"forced-{override.mode}"
        return State.CLOSED.value if found is None else found.state.value

    def __repr__(self) -> str:
        return f"<Gate {self.core!r}>"


class GateCall:
    """One call through a gate (see :meth:`Gate.call`)."""

    __slots__ = (
        "_cancelling",
        "_expired",
        "_gate",
        "_generation",
        "_partition",
        "_slot",
        "_start",
        "_task",
    )

    def __init__(self, gate: Gate, partition: str) -> None:
        self._gate = gate
        self._partition = partition
        self._task: asyncio.Task[Any] | None = None
        self._expired = False

    async def __aenter__(self) -> GateCall:
        gate = self._gate
        core = gate.core
        now = gate.clock()
        try:
            self._slot, self._generation = core.admit(self._partition, now)
        finally:
            if core.changes:
                gate.flush()
        self._start = now
        limit = core.policy.call_timeout
        if limit > 0:
            task = asyncio.current_task()
            if task is not None:
                self._task = task
                self._cancelling = task.cancelling()
                gate._watch(self, limit)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task = self._task
        if task is not None:
            if not self._expired:
                self._gate._timed.pop(self, None)
            elif task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                # Our cancellation, not the caller's: the call timed out (as asyncio.timeout).
                expired = TimeoutError()
                self._done(expired)
                raise expired from exc
        self._done(exc)

    def _expire(self) -> None:
        self._expired = True
        if self._task is not None:
            self._task.cancel()

    def _done(self, exc: BaseException | None) -> None:
        gate = self._gate
        core = gate.core
        now = gate.clock()
        slot: Partition = self._slot
        if exc is None:
            core.record(slot, self._generation, now, now - self._start, _SUCCESS)
        elif isinstance(exc, asyncio.CancelledError):
            core.record(slot, self._generation, now, now - self._start, Outcome.CANCELLED)
        elif gate.failure(exc):
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            core.record(slot, self._generation, now, now - self._start, Outcome.FAILURE, error)
        else:
            core.record(slot, self._generation, now, now - self._start, _SUCCESS)
        if core.changes:
            gate.flush()


_SUCCESS: Final = Outcome.SUCCESS


def _log_change(change: Change) -> None:
    where = f" (from {change.node})" if change.node else ""
    subject = (
        f"gate {change.gate}[{change.partition}]" if change.partition else f"gate {change.gate}"
    )
    if change.event == "expired":
        log.warning("%s back to automatic: the override's TTL ran out", subject)
    elif change.event == "override":
        override = change.override
        if override is None:
            log.warning("%s back to automatic%s", subject, where)
        else:
            until = "" if override.until is None else " until its TTL runs out"
            log.warning("%s forced %s by %s%s%s", subject, override.mode, override.by, until, where)
    elif change.state is State.OPEN:
        reason = change.trip.reason if change.trip is not None else change.event
        log.warning("%s opened%s: %s", subject, where, reason)
    else:
        log.info("%s %s%s", subject, change.state.value, where)
