"""The control channel's wire format, shared by the node (:mod:`roost.admin.channel`) and
its clients (:mod:`roost.admin.client`).

Newline-delimited JSON over a unix socket: every message is one JSON object on one line
(UTF-8; JSON escapes newlines inside strings, so a line is always a whole message). A client
sends requests and the node answers each with a response carrying the same ``id``::

    → {"id": 1, "command": "sessions", "args": {"user": "alice@localhost"}}
    ← {"id": 1, "ok": true, "result": [{"jid": "alice@localhost/phone", ...}]}
    ← {"id": 2, "ok": false, "error": {"code": "not-found", "message": "..."}}

Requests on one connection run concurrently and responses may come back in any order; the
``id`` (any JSON value the client chooses) pairs them up. A response to a message that could
not be read at all has ``"id": null``.

``command`` is an admin command of :mod:`roost.admin.commands` (``"user add"``, with its
arguments by name in ``args``), or one of the shell operations:

``shell``     switch this connection to shell mode (refused when ``admin.shell`` is false);
              the result is a banner. The evaluation namespace lives as long as the connection.
``eval``      ``{"code": "..."}`` evaluate in the node; the result is
              ``{"repr", "value", "stdout", "stderr"}`` (``value`` is the result when it is
              JSON-able, else null); a failure is the error ``exception`` whose ``message`` is
              the traceback and which carries ``stdout``/``stderr`` too.
``complete``  ``{"text": "server.se"}`` the completions of a name, rlcompleter-style.
``cancel``    ``{"target": ID}`` cancel the running ``eval`` whose request id is ID (^C).

Several nodes. In a cluster a request may name the nodes it is for (:mod:`roost.admin.fanout`
runs it there over the mesh): ``"nodes": "all"`` or a list of node names, and optionally
``"node_timeout"`` (seconds each node has to answer; default ``admin.node_timeout``). Commands
declared cluster-wide (``config set``) go to every node when ``nodes`` is absent. The answer
then has the name of the node that was asked and one response per node instead of ``result``::

    → {"id": 3, "command": "status", "args": {}, "nodes": "all"}
    ← {"id": 3, "ok": true, "node": "a", "nodes": {
          "a": {"ok": true, "result": {...}},
          "b": {"ok": false, "error": {"code": "node-timeout", "message": "..."}}}}

A request that is wrong whatever the node (bad arguments, an unknown node name, a command
that runs on one node only) gets one error, as without ``nodes``.

Error codes, and the exit code ``roost ctl`` turns them into, are :data:`ERRORS`. The exit code
of an answer by several nodes is the highest of theirs (:func:`nodes_exit_code`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

MAX_MESSAGE: Final = 16 * 1024 * 1024  # one line; shell code and big results fit

# Exit codes of `roost ctl` and `roost shell` that scripts can rely on.
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # the node ran the command and it failed
EXIT_USAGE: Final = 2  # bad arguments (argparse's convention), or an unknown command
EXIT_UNREACHABLE: Final = 3  # no node answers on the control socket
EXIT_NODE_DOWN: Final = 4  # asked several nodes: at least one did not answer (down, too slow)

# Error code -> exit code. Codes not listed here are failures of the command (exit 1).
ERRORS: Final[dict[str, int]] = {
    "bad-request": EXIT_USAGE,  # not a JSON object with a command
    "unknown-command": EXIT_USAGE,
    "bad-arguments": EXIT_USAGE,  # missing, unknown or ill-typed arguments, invalid values
    "not-found": EXIT_FAILED,  # no such user, session or setting
    "exists": EXIT_FAILED,
    "invalid-config": EXIT_FAILED,  # a reload found problems; nothing was changed
    "reload-failed": EXIT_FAILED,  # applying failed and was rolled back
    "shell-disabled": EXIT_FAILED,
    "shell-not-open": EXIT_USAGE,
    "exception": EXIT_FAILED,  # shell code raised
    "timeout": EXIT_FAILED,  # shell code ran longer than admin.eval_timeout
    "cancelled": EXIT_FAILED,
    "forbidden": EXIT_UNREACHABLE,  # the peer is not the node's user nor root
    "failed": EXIT_FAILED,  # anything else that went wrong (a file that cannot be written)
    "internal-error": EXIT_FAILED,  # a bug: the node logged the traceback
    "unknown-node": EXIT_USAGE,  # --node names no node of the cluster
    "bad-target": EXIT_USAGE,  # --node/--all for a command that runs on one node only
    "node-unreachable": EXIT_NODE_DOWN,  # no link to that node now, or it was lost
    "node-timeout": EXIT_NODE_DOWN,  # the node did not answer within the node timeout
    "too-large": EXIT_FAILED,  # a node's result does not fit in one mesh frame
    "local-only": EXIT_FAILED,  # the shell or code over the network (roost ctl --remote)
}


def exit_code(error_code: str) -> int:
    return ERRORS.get(error_code, EXIT_FAILED)


def nodes_exit_code(replies: Mapping[str, Mapping[str, Any]], found_anywhere: bool = False) -> int:
    """The exit code of per-node responses: the highest of theirs (0 when all succeeded).

    With ``found_anywhere`` (a command looking for something on whichever node has it), a
    node's ``not-found`` counts as success when another node succeeded.
    """
    codes = {
        node: EXIT_OK if reply.get("ok") else exit_code(str(reply["error"].get("code")))
        for node, reply in replies.items()
    }
    if found_anywhere and EXIT_OK in codes.values():
        codes = {
            node: EXIT_OK
            if replies[node].get("ok") is False
            and replies[node]["error"].get("code") == "not-found"
            else code
            for node, code in codes.items()
        }
    return max(codes.values(), default=EXIT_OK)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """A message; raises ValueError when the line is not a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a message is a JSON object")
    return message


def response(request_id: Any, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error(request_id: Any, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message, **extra}}


def socket_path(data_dir: Path, socket: Path) -> Path:
    """Where the control socket is: ``admin.socket``, relative to the data directory."""
    return socket if socket.is_absolute() else data_dir / socket


# sun_path holds 108 bytes on Linux (104 on BSDs) including the terminating NUL.
_SUN_PATH: Final = 100


@contextlib.contextmanager
def address(path: Path) -> Iterator[str]:
    """An address for ``bind``/``connect`` of ``path``, even when it is too long for one.

    Deep data directories (test runners' temporary directories, home directories on network
    storage) exceed the size of a socket address. On Linux the directory can be named
    through a file descriptor instead: ``/proc/self/fd/N/ctl.sock`` is short and resolves
    to the same place.
    """
    text = os.fsdecode(os.path.abspath(path))
    if len(os.fsencode(text)) < _SUN_PATH:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        short = f"/proc/self/fd/{fd}/{path.name}"
        if len(os.fsencode(short)) >= _SUN_PATH or not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(f"the control socket path is too long: {path}")
        yield short
    finally:
        os.close(fd)
