"""The storage thread of the SQLite backend: one connection, group commit.

:class:`StorageThread` owns a :mod:`sqlite3` connection on a thread of its own and runs the
operations that coroutines submit to it, several per transaction. Why a thread and why group
commit is explained in :mod:`roost.storage.sqlite`, which builds on this module; this module
knows nothing of roost's schema. How it works:

- :meth:`StorageThread.submit` queues an operation (a function of the connection) and returns a
  future. Operations submitted during one turn of the event loop are handed to the thread
  together, at the end of that turn (``call_soon``), so that a burst arrives as one batch.
- The thread takes every batch waiting in its queue and runs the operations in order, at most
  ``max_transaction`` per transaction. A transaction with a write begins ``IMMEDIATE`` (the
  write lock is taken up front, through the busy timeout); one that only reads begins deferred,
  a consistent snapshot that costs no commit.
- Each operation runs inside its own ``SAVEPOINT``: one that raises is rolled back to it and
  fails only its own caller; the others still commit.
- Results are delivered after the ``COMMIT`` succeeded, grouped per event loop into a single
  ``call_soon_threadsafe``, so that an answered write is durable. A failed commit fails every
  operation of its transaction.
- The thread runs at a lower CPU priority than the process (``nice``, by default
  ``THREAD_NICE``; Linux only). On
  a core it shares with the event loop, a batch of archive writes (tens of milliseconds of
  SQLite work) otherwise takes the core in scheduler slices while messages wait: at 2,000
  messages/s the 99th percentile of message latency was under 1 ms without archiving and
  about 4 ms with it. With a lower priority the loop preempts the thread as soon as a socket is
  readable, and the thread uses what the loop leaves. Under a loop that is never idle the
  thread still gets about a tenth of the core, and the archive's high-water mark slows
  senders down rather than letting writes fall behind without bound.
- Opening and closing the connection are control operations: they run alone, outside any
  transaction, after everything submitted before them. Closing is the thread's last operation.

Every :class:`sqlite3.Error` reaches callers as :class:`~roost.storage.base.StorageError`;
other exceptions reach them unchanged. Cancelling an awaiting caller does not cancel its
operation, which may still take effect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import queue
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from roost.storage.base import StorageError

_T = TypeVar("_T")

# Added to the storage thread's nice value by default (CFS weight 110 against the loop's
# 1024); the ``storage.thread_nice`` setting.
THREAD_NICE = 10


@dataclass(slots=True)
class SQLiteStatistics:
    """Counters of a storage thread since it started."""

    operations: int = 0  # reads and writes run, whether they succeeded or not
    failed: int = 0  # operations that raised
    batches: int = 0  # times the thread woke up to work
    transactions: int = 0  # transactions begun, reading or writing
    commits: int = 0  # writing transactions committed
    largest_transaction: int = 0  # the most operations one transaction ran


@dataclass(slots=True, eq=False)
class _Operation:
    # Called with the connection; control operations are called without arguments.
    function: Callable[..., Any]
    writes: bool
    what: str  # names the operation in error messages
    future: asyncio.Future[Any]
    control: bool = False  # open/close: runs alone, outside any transaction
    stops: bool = False  # the last operation: the thread exits after it


# (operation, error, value): settled with the error when there is one, else with the value.
_Outcome = tuple[_Operation, BaseException | None, Any]


class StorageThread:
    """A connection owned by one thread, running submitted operations with group commit.

    ``connect`` (run on the thread by :meth:`start`) returns the connection, in autocommit mode
    (``isolation_level=None``: the thread issues ``BEGIN`` and ``COMMIT`` itself);
    ``disconnect`` (run by :meth:`stop`) closes it. ``label`` names the database in errors.
    """

    def __init__(
        self,
        label: str,
        connect: Callable[[], sqlite3.Connection],
        disconnect: Callable[[sqlite3.Connection], None],
        *,
        max_transaction: int = 1000,
        nice: int = 10,
    ) -> None:
        self._label = label
        self._nice = nice
        self._connect = connect
        self._disconnect = disconnect
        # Bounds one transaction, so that a huge burst still commits (and answers) in steps and
        # the write lock is never held for long against other processes.
        self._max_transaction = max_transaction
        self._thread: threading.Thread | None = None
        self._stopped = False
        # Event-loop side: the operations of the current turn, not yet handed over.
        self._pending: list[_Operation] = []
        self._flush_scheduled = False
        self._requests: queue.SimpleQueue[list[_Operation]] = queue.SimpleQueue()
        # Thread side: only the thread touches the connection.
        self._connection: sqlite3.Connection | None = None
        self._statistics = SQLiteStatistics()
        self._statistics_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def statistics(self) -> SQLiteStatistics:
        """A snapshot of the counters."""
        with self._statistics_lock:
            return dataclasses.replace(self._statistics)

    async def start(self) -> None:
        """Start the thread and connect; on failure, stop the thread again and raise."""
        if self._thread is not None or self._stopped:
            raise StorageError(f"{self._label} was already opened")
        self._thread = threading.Thread(
            target=self._serve,
            name=f"roost-sqlite:{self._label}",
            # Daemon, so that a process that exits without stop() does not hang on it: every
            # answered write is already committed, and the WAL survives an abrupt exit.
            daemon=True,
        )
        self._thread.start()
        try:
            await self._control(self._open, "open")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Finish every operation submitted so far, close the connection, end the thread."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is None:
            return
        future = self._control(self._close, "close", stops=True)
        try:
            await future
        finally:
            # The thread returns right after settling the future, so joining does not block.
            # When stop() itself is cancelled, the thread finishes the pending work on its own.
            if not future.cancelled():
                self._thread.join()

    def submit(
        self, function: Callable[[sqlite3.Connection], _T], *, writes: bool, what: str
    ) -> asyncio.Future[_T]:
        """Queue ``function`` to run on the thread; ``what`` names it in error messages."""
        if self._thread is None:
            raise StorageError(f"{self._label} is not open")
        if self._stopped:
            raise StorageError(f"{self._label} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._pending.append(_Operation(function, writes, what, future))
        if not self._flush_scheduled:
            # After every task that is ready now has run, so that a burst travels together.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    # -- event-loop side ---------------------------------------------------------------------

    def _control(
        self, function: Callable[[], None], what: str, *, stops: bool = False
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush()  # what was submitted before runs before
        self._requests.put([_Operation(function, False, what, future, control=True, stops=stops)])
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            batch, self._pending = self._pending, []
            self._requests.put(batch)

    # -- the thread --------------------------------------------------------------------------

    def _open(self) -> None:
        self._connection = self._connect()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._disconnect(connection)

    def _serve(self) -> None:
        """The thread's body: take every waiting batch and run it, until told to stop."""
        _lower_priority(self._nice)
        stopped = False
        while not stopped:
            batch = self._requests.get()
            while True:
                try:
                    batch.extend(self._requests.get_nowait())
                except queue.Empty:
                    break
            with self._statistics_lock:
                self._statistics.batches += 1
            work: deque[_Operation] = deque()
            for operation in batch:
                if stopped:
                    self._deliver([(operation, StorageError(f"{self._label} is closed"), None)])
                elif operation.control:
                    self._run_transactions(work)
                    self._deliver([self._run_alone(operation)])
                    stopped = operation.stops
                else:
                    work.append(operation)
            self._run_transactions(work)

    def _run_alone(self, operation: _Operation) -> _Outcome:
        try:
            return (operation, None, operation.function())
        except Exception as error:
            return (operation, _converted(error, operation.what), None)

    def _run_transactions(self, work: deque[_Operation]) -> None:
        while work:
            self._deliver(self._transaction(work))

    def _transaction(self, work: deque[_Operation]) -> list[_Outcome]:
        """Run up to ``max_transaction`` operations from ``work`` in one transaction.

        Operations left over (too many, or after a failure that ended the transaction) stay in
        ``work`` for the next transaction.
        """
        operations = [work.popleft() for _ in range(min(len(work), self._max_transaction))]
        connection = self._connection
        if connection is None:
            closed = StorageError(f"{self._label} is not open")
            return [(operation, closed, None) for operation in operations]
        writes = any(operation.writes for operation in operations)
        with self._statistics_lock:
            self._statistics.transactions += 1
            self._statistics.largest_transaction = max(
                self._statistics.largest_transaction, len(operations)
            )
        try:
            connection.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        except sqlite3.Error as error:
            self._count(len(operations), len(operations), 0)
            return [(op, _converted(error, op.what), None) for op in operations]
        succeeded: list[_Outcome] = []
        failed: list[_Outcome] = []
        for index, operation in enumerate(operations):
            try:
                connection.execute("SAVEPOINT operation")
                value = operation.function(connection)
                connection.execute("RELEASE operation")
            except Exception as error:
                failed.append((operation, _converted(error, operation.what), None))
                if _roll_back_savepoint(connection):
                    continue
                # Some errors (disk full, I/O) make SQLite roll back the whole transaction:
                # the writes that succeeded so far are lost, and the rest get a new one.
                work.extendleft(reversed(operations[index + 1 :]))
                lost = StorageError(f"transaction rolled back after an error: {error}")
                self._count(index + 1, index + 1, 0)
                return failed + [(op, lost, None) for op, _, _ in succeeded]
            else:
                succeeded.append((operation, None, value))
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            roll_back(connection)
            self._count(len(operations), len(operations), 0)
            return failed + [(op, _converted(error, op.what), None) for op, _, _ in succeeded]
        self._count(len(operations), len(failed), 1 if writes else 0)
        return failed + succeeded

    def _count(self, operations: int, failed: int, commits: int) -> None:
        with self._statistics_lock:
            self._statistics.operations += operations
            self._statistics.failed += failed
            self._statistics.commits += commits

    @staticmethod
    def _deliver(outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].future.get_loop(), []).append(outcome)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits these results any more


def _settle(outcomes: list[_Outcome]) -> None:
    for operation, error, value in outcomes:
        if operation.future.cancelled():
            continue
        if error is not None:
            operation.future.set_exception(error)
        else:
            operation.future.set_result(value)


def _converted(error: Exception, what: str) -> Exception:
    if not isinstance(error, sqlite3.Error):
        return error
    converted = StorageError(f"{what}: {error}")
    converted.__cause__ = error
    return converted


def _roll_back_savepoint(connection: sqlite3.Connection) -> bool:
    """Undo the failed operation; False when the whole transaction is already gone."""
    if not connection.in_transaction:
        return False
    try:
        connection.execute("ROLLBACK TO operation")
        connection.execute("RELEASE operation")
    except sqlite3.Error:
        roll_back(connection)
        return False
    return True


def roll_back(connection: sqlite3.Connection) -> None:
    """Abandon the open transaction, if any, whatever state it is in."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone either way; the error that caused this is reported


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority by ``nice`` (see the module doc).

    Linux only: there a thread's nice value is its own (``setpriority`` on its thread id);
    elsewhere it would change the whole process, so nothing is done.
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except OSError:  # a sandbox may refuse it; the thread works the same, only less politely
        pass
