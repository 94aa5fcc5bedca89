"""Evaluating Python inside the running node: the engine of ``roost shell`` and of
:meth:`roost.testing.RunningServer.eval`.

An :class:`Evaluator` holds one namespace (it persists between evaluations: one per shell
connection) and evaluates code the way the interactive interpreter does, with top-level
``await`` allowed (``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``): statements run, and when the last
one is an expression its value is the result (echoed by the shell, kept in ``_``).

Each evaluation runs as a task of the node's event loop with a timeout
(``admin.eval_timeout``), and can be cancelled (^C in the shell). Cancellation only happens
at an ``await``: code that blocks the loop synchronously (``time.sleep(60)``, a CPU-bound
loop, a blocking socket) cannot be interrupted, and the whole node, every client included,
waits for it. Prefer ``await asyncio.sleep()`` and ``await asyncio.to_thread(...)``.

What the code prints goes to the shell, not to the node's terminal: ``sys.stdout`` and
``sys.stderr`` are replaced, while evaluations run, by proxies that send the writes of the
evaluation's task (and of tasks it creates, which inherit its context) to its buffers and
everyone else's writes to the real streams.

The namespace starts with these helpers (:data:`HELPERS`)::

    server        the Server: storage, auth, hooks, router, sessions, modules, listeners ...
    sessions()    the live client sessions (C2SSession objects)
    session(jid)  one session, by full JID (or bare JID, when the user has exactly one)
    config()      the running ServerConfig
    stats()       what `roost ctl status` reports
    ctl           every admin command as a coroutine function: await ctl.kick("a@b/c")
    groups()      the process-group scopes (pg); groups("sessions"): each group's members
    gates()       the circuit breakers, as `roost ctl gates` lists them (server.gates: the Gates)
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import contextvars
import inspect
import io
import json
import linecache
import rlcompleter
import sys
import traceback
import types
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

if TYPE_CHECKING:
    from roost.core.server import Server

HELPERS: Final = (
    "server",
    "sessions",
    "session",
    "config",
    "stats",
    "ctl",
    "groups",
    "gates",
)
GRACE: Final = 1.0  # seconds a cancelled evaluation gets to unwind
MAX_COMPLETIONS: Final = 500


@dataclass(slots=True)
class Evaluation:
    """The outcome of one evaluation."""

    status: str  # "ok", "exception", "timeout" or "cancelled"
    value: Any = None
    stdout: str = ""
    stderr: str = ""
    error: BaseException | None = None
    traceback: str = ""  # formatted, for a failure

    def repr(self) -> str:
        try:
            return repr(self.value)
        except Exception as exc:
            return f"<repr failed: {type(exc).__name__}: {exc}>"


class Evaluator:
    """One namespace and the evaluations in it. See the module docstring."""

    def __init__(self, server: Server) -> None:
        self.namespace = namespace(server)
        self._count = 0
        self._running: dict[Any, asyncio.Task[Any]] = {}

    async def evaluate(self, code: str, *, limit: float | None, key: Any = None) -> Evaluation:
        """Evaluate ``code`` for at most ``limit`` seconds; ``key`` names it for :meth:`cancel`."""
        self._count += 1
        filename = f"<shell#{self._count}>"
        # Tracebacks show the lines of evaluated code, as they do for files.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            body, expression = _compile(code, filename)
        except (SyntaxError, ValueError, OverflowError) as exc:
            text = "".join(traceback.format_exception_only(type(exc), exc))
            return Evaluation("exception", error=exc, traceback=text)
        return await self._execute(lambda: self._run(body, expression), limit, key)

    async def call(
        self, function: Callable[..., Any], *args: Any, limit: float | None, **kwargs: Any
    ) -> Evaluation:
        """Call ``function(*args, **kwargs)`` as an evaluation (awaiting what it returns)."""

        async def run() -> Any:
            result = function(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return await self._execute(run, limit, None)

    def cancel(self, key: Any) -> bool:
        """Cancel the running evaluation named ``key``; False when there is none."""
        task = self._running.get(key)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def complete(self, text: str) -> list[str]:
        """Names and attributes completing ``text``, as rlcompleter finds them."""
        if not text.strip():
            return []  # rlcompleter would insert a tab with readline, here in the node
        completer = rlcompleter.Completer(self.namespace)
        matches: list[str] = []
        while len(matches) < MAX_COMPLETIONS:
            try:
                match = completer.complete(text, len(matches))
            except Exception:
                break
            if match is None:
                break
            matches.append(match)
        return matches

    async def _execute(
        self, make: Callable[[], Coroutine[Any, Any, Any]], limit: float | None, key: Any
    ) -> Evaluation:
        out, err = io.StringIO(), io.StringIO()
        context = contextvars.copy_context()
        context.run(_CAPTURE.set, (out, err))
        with _capturing():
            task = asyncio.get_running_loop().create_task(make(), context=context)
            if key is not None:
                self._running[key] = task
            try:
                done, _ = await asyncio.wait({task}, timeout=limit)
                if not done:
                    task.cancel()
                    await asyncio.wait({task}, timeout=GRACE)
            except asyncio.CancelledError:
                task.cancel()  # whoever waited for us is gone (the shell disconnected)
                raise
            finally:
                if key is not None:
                    self._running.pop(key, None)
        evaluation = Evaluation("ok")
        if not done:
            evaluation.status = "timeout"
            evaluation.traceback = (
                f"TimeoutError: the evaluation ran longer than {limit:g} s "
                "(admin.eval_timeout) and was cancelled"
            )
            if not task.done():
                evaluation.traceback += "; it ignored the cancellation and still runs"
            evaluation.error = TimeoutError(evaluation.traceback)
        elif task.cancelled():
            evaluation.status = "cancelled"
            evaluation.traceback = "KeyboardInterrupt: the evaluation was cancelled"
            evaluation.error = asyncio.CancelledError()
        elif (exc := task.exception()) is not None:
            evaluation.status = "exception"
            evaluation.error = exc
            evaluation.traceback = _format(exc)
        else:
            evaluation.value = task.result()
            if evaluation.value is not None:
                self.namespace["_"] = evaluation.value
        evaluation.stdout = out.getvalue()
        evaluation.stderr = err.getvalue()
        return evaluation

    async def _run(self, body: types.CodeType | None, expression: types.CodeType | None) -> Any:
        namespace = self.namespace
        if body is not None:
            result = eval(body, namespace)
            if body.co_flags & inspect.CO_COROUTINE:
                await result
        if expression is None:
            return None
        value = eval(expression, namespace)
        if expression.co_flags & inspect.CO_COROUTINE:
            value = await value
        return value


def _compile(code: str, filename: str) -> tuple[types.CodeType | None, types.CodeType | None]:
    """(statements, final expression): the value of a final expression is the result."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = ast.parse(code, filename, "exec")
    statements = tree.body
    expression = None
    if statements and isinstance(statements[-1], ast.Expr):
        expression = compile(
            ast.Expression(statements[-1].value), filename, "eval", flags=flags, dont_inherit=True
        )
        statements = statements[:-1]
    body = None
    if statements:
        module = ast.Module(statements, type_ignores=[])
        body = compile(module, filename, "exec", flags=flags, dont_inherit=True)
    return body, expression


def _format(exc: BaseException) -> str:
    """The traceback from the evaluated code on (the evaluator's own frames left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def json_value(value: Any) -> Any:
    """``value`` if it survives JSON unchanged enough to be useful, else None."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return None


# -- output capture ---------------------------------------------------------------------------

_CAPTURE: contextvars.ContextVar[tuple[io.StringIO, io.StringIO] | None] = contextvars.ContextVar(
    "roost_shell_capture", default=None
)
_active = 0


class _Stream:
    """Stands in for sys.stdout or sys.stderr while evaluations run."""

    def __init__(self, original: TextIO, index: int) -> None:
        self.original = original
        self._index = index

    def write(self, text: str) -> int:
        capture = _CAPTURE.get()
        if capture is not None:
            return capture[self._index].write(text)
        return self.original.write(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _CAPTURE.get() is None:
            self.original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


@contextlib.contextmanager
def _capturing() -> Iterator[None]:
    global _active
    if _active == 0:
        if not isinstance(sys.stdout, _Stream):
            sys.stdout = cast(TextIO, _Stream(sys.stdout, 0))
        if not isinstance(sys.stderr, _Stream):
            sys.stderr = cast(TextIO, _Stream(sys.stderr, 1))
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if _active == 0:
            if isinstance(sys.stdout, _Stream):
                sys.stdout = sys.stdout.original
            if isinstance(sys.stderr, _Stream):
                sys.stderr = sys.stderr.original


# -- the namespace ---------------------------------------------------------------------------


def namespace(server: Server) -> dict[str, Any]:
    from roost.admin.builtin import status_of
    from roost.admin.commands import Command, registry

    def sessions() -> list[Any]:
        """The live client sessions."""
        return list(server.sessions)

    def session(jid: str) -> Any:
        """The session of a full JID, or the only session of a bare JID."""
        from roost.xmpp.jid import parse_jid

        parsed = parse_jid(jid)
        if parsed.resource is not None:
            found = server.sessions.get(parsed)
            if found is None:
                raise LookupError(f"no session {jid}")
            return found
        routes = server.sessions.routes(parsed.bare_str)
        if len(routes) != 1:
            names = ", ".join(str(r.jid) for r in routes) or "none"
            raise LookupError(f"{jid} has {len(routes)} sessions ({names}); give a full JID")
        return routes[0]

    def gates() -> list[dict[str, Any]]:
        """Every gate and partition: state, rates, calls, last trip (see roost.gate)."""
        return server.gates.statistics()

    def config() -> Any:
        """The running configuration."""
        return server.config

    def stats() -> dict[str, Any]:
        """What `roost ctl status` reports."""
        return status_of(server)

    def groups(scope: str | None = None) -> dict[str, Any]:
        """The node's process-group scopes by name (the live pg Scope objects); with a scope's
        name, that scope's groups and their members as this node sees them."""
        from roost.cluster.pg_driver import drivers

        running = drivers(server.cluster.mesh) if server.cluster is not None else {}
        if scope is None:
            return {name: driver.scope for name, driver in running.items()}
        if scope not in running:
            raise LookupError(f"no scope {scope!r} here (scopes: {', '.join(running) or 'none'})")
        pg = running[scope].scope
        return {group: pg.members(group) for group in pg.which_groups()}

    def function(command: Command) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def run(*args: Any, **kwargs: Any) -> Any:
            names = [arg.name for arg in command.args]
            if len(args) > len(names):
                raise TypeError(f"{command.function_name}() takes at most {len(names)} arguments")
            return await command.run(server, {**dict(zip(names, args, strict=False)), **kwargs})

        run.__name__ = run.__qualname__ = command.function_name
        run.__doc__ = command.help
        return run

    ctl = types.SimpleNamespace(**{c.function_name: function(c) for c in registry().values()})
    return {
        "__name__": "__roost_shell__",
        "__builtins__": builtins,
        "asyncio": asyncio,
        "server": server,
        "sessions": sessions,
        "session": session,
        "config": config,
        "stats": stats,
        "ctl": ctl,
        "groups": groups,
        "gates": gates,
    }
