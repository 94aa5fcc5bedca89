"""``roost shell``: a Python prompt inside the running node.

Code typed here runs in the node's event loop (see :mod:`roost.admin.shell` for the
semantics: top-level ``await``, output captured, a timeout per evaluation, the helpers
``server``, ``sessions()``, ``session(jid)``, ``config()``, ``stats()``, ``ctl``). Tab
completes names from the node; history is kept in ``~/.roost_shell_history``. ^C cancels a
running evaluation (code that blocks the loop without awaiting cannot be interrupted), ^D
leaves. Every evaluation is recorded in the node's ``audit.log``.

When stdin is not a terminal the whole input is read and evaluated one top-level statement
at a time, as if typed (expression values are printed), stopping at the first failure::

    echo 'len(sessions())' | roost shell --data-dir /var/lib/roost

Exit codes: 0 success, 1 an evaluation failed (or the shell is disabled:
``admin.shell = false``), 3 the node is not reachable.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import codeop
import os
import sys
from pathlib import Path
from typing import Any

from roost.admin.protocol import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from roost.cli.ctl import add_connection_args

HISTORY = Path("~/.roost_shell_history")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "shell",
        help="a Python prompt inside the running node",
        description="Evaluate Python in the running node's event loop (top-level await "
        "allowed). Reads the code from stdin when it is not a terminal.",
        epilog="exit codes: 0 ok, 1 an evaluation failed, 3 the node is not reachable",
    )
    add_connection_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from roost.admin.client import ControlClient, NodeUnreachable, RemoteError, locate

    path = locate(args.data_dir, args.config, args.socket)
    try:
        client = ControlClient.connect(path, timeout=args.timeout)
    except NodeUnreachable as exc:
        print(f"roost: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    with client:
        try:
            banner = client.request("shell")
            client.set_timeout(None)  # evaluations are bounded by the node's timeout
            if sys.stdin.isatty():
                return _interactive(client, banner)
            return _batch(client, sys.stdin.read())
        except NodeUnreachable as exc:
            print(f"roost: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except RemoteError as exc:
            print(f"roost: {exc.message}", file=sys.stderr)
            return exc.exit_code


def evaluate(client: Any, code: str) -> bool:
    """Evaluate ``code`` in the node and print what it produced; False when it failed."""
    request_id = client.send("eval", {"code": code})
    interrupted = False
    while True:
        try:
            response = client.wait(request_id)
            break
        except KeyboardInterrupt:
            if interrupted:
                raise  # a second ^C: stop waiting and leave
            interrupted = True
            client.send("cancel", {"target": request_id})
    if response.get("ok"):
        result = response["result"]
        _write(result.get("stdout", ""), result.get("stderr", ""))
        if result.get("repr") is not None:
            print(result["repr"], flush=True)
        return True
    error = response.get("error") or {}
    _write(error.get("stdout", ""), error.get("stderr", ""))
    message = str(error.get("message", "failed"))
    sys.stderr.write(message if message.endswith("\n") else message + "\n")
    sys.stderr.flush()
    return False


def _write(out: str, err: str) -> None:
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()
    if err:
        sys.stderr.write(err)
        sys.stderr.flush()


def statements(source: str) -> list[str]:
    """The top-level statements of ``source``, each as its source text (SyntaxError if bad)."""
    tree = ast.parse(source, "<stdin>", "exec")
    lines = source.splitlines(keepends=True)
    spans: list[list[int]] = []
    for node in tree.body:
        decorators = getattr(node, "decorator_list", [])
        start = min([node.lineno, *(d.lineno for d in decorators)])
        end = node.end_lineno or node.lineno
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)  # `a = 1; b = 2` share a line
        else:
            spans.append([start, end])
    return ["".join(lines[start - 1 : end]) for start, end in spans]


def _batch(client: Any, source: str) -> int:
    try:
        blocks = statements(source)
    except SyntaxError as exc:
        import traceback

        sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
        return EXIT_FAILED
    for block in blocks:
        if not evaluate(client, block):
            return EXIT_FAILED
    return EXIT_OK


def _interactive(client: Any, banner: dict[str, Any]) -> int:
    _readline(client)
    compiler = codeop.CommandCompiler()
    compiler.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    print(
        f"roost {banner['version']} shell on {banner['node']} (pid {banner['pid']}), "
        f"domain {banner['domain']}\n"
        f"helpers: {', '.join(banner['helpers'])}; top-level await works; "
        f"each evaluation may run {banner['eval_timeout']:g} s; ^C cancels, ^D leaves"
    )
    prompt = f"{banner['node']}> "
    buffer: list[str] = []
    while True:
        try:
            line = input("... " if buffer else prompt)
        except EOFError:
            print()
            return EXIT_OK
        except KeyboardInterrupt:
            print("\nKeyboardInterrupt")
            buffer = []
            continue
        buffer.append(line)
        source = "\n".join(buffer)
        try:
            complete = compiler(source, "<shell>", "single") is not None
        except (SyntaxError, OverflowError, ValueError):
            complete = True  # the node reports the error, with its position
        if not complete:
            continue
        buffer = []
        if source.strip():
            try:
                evaluate(client, source + "\n")
            except KeyboardInterrupt:
                print("\nKeyboardInterrupt: left without waiting for the evaluation")
                return EXIT_FAILED


def _readline(client: Any) -> None:
    try:
        import readline
    except ImportError:  # pragma: no cover - no readline: no history nor completion
        return
    history = HISTORY.expanduser()
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_history_length(10_000)

    def save() -> None:
        try:
            readline.write_history_file(history)
            os.chmod(history, 0o600)  # shell history may hold secrets
        except OSError:
            pass

    atexit.register(save)
    matches: list[str] = []

    def complete(text: str, state: int) -> str | None:
        nonlocal matches
        if state == 0:
            try:
                matches = list(client.request("complete", {"text": text}))
            except Exception:
                matches = []
        return matches[state] if state < len(matches) else None

    readline.set_completer(complete)
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
