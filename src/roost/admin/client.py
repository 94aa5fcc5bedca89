"""The client side of the control channel: what ``roost ctl`` and ``roost shell`` use.

:class:`ControlClient` is blocking on purpose: the CLI has nothing else to do while it waits,
readline's completer is synchronous, and ^C arrives as KeyboardInterrupt in the waiting call
(the shell then sends ``cancel``). :class:`AsyncControlClient` is the same conversation for
asyncio code: a test harness or, later, a node driving another node's ``eval``.

:func:`locate` finds the socket of the node on a data directory as ``roost up`` would have
placed it (``admin.socket`` from the same configuration layers).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from pathlib import Path
from typing import Any

from roost.admin import protocol


class NodeUnreachable(Exception):
    """No node answers on the control socket (exit code 3)."""


class RemoteError(Exception):
    """The node answered with an error."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}

    @property
    def exit_code(self) -> int:
        return protocol.exit_code(self.code)


def locate(
    data_dir: Path | None, config_file: Path | None = None, socket_path: Path | None = None
) -> Path:
    """The control socket of the node on ``data_dir`` (default ``./roost-data``)."""
    if socket_path is not None:
        return socket_path
    from roost.config.pipeline import SCHEMA, ConfigError, build

    flags = {} if data_dir is None else {"server.data_dir": (str(data_dir), "--data-dir")}
    try:
        config = build(config_file=config_file, flags=flags).config
    except ConfigError:
        # Not our business to report here (the node would have refused to start with it):
        # fall back to the defaults below the broken layer.
        default = Path(SCHEMA["server.data_dir"].default)
        return protocol.socket_path(data_dir or default, SCHEMA["admin.socket"].default)
    return protocol.socket_path(config.data_dir, config.admin_socket)


def _unreachable(path: Path, exc: OSError) -> NodeUnreachable:
    if isinstance(exc, FileNotFoundError):
        return NodeUnreachable(f"no node is running here: no control socket at {path}")
    if isinstance(exc, ConnectionRefusedError):
        return NodeUnreachable(f"no node is running here: {path} is left over from a node gone")
    if isinstance(exc, PermissionError):
        return NodeUnreachable(f"cannot use {path}: permission denied (another user's node)")
    return NodeUnreachable(f"cannot reach the node at {path}: {exc.strerror or exc}")


def result_of(message: dict[str, Any]) -> Any:
    """The result of a response (by node, for a request to several), or RemoteError."""
    if message.get("ok"):
        if "nodes" in message:
            return message["nodes"]
        return message.get("result")
    error = message.get("error") or {}
    code = str(error.get("code", "internal-error"))
    text = str(error.get("message", "the node reported an error"))
    data = {k: v for k, v in error.items() if k not in ("code", "message")}
    raise RemoteError(code, text, data)


class ControlClient:
    """A blocking connection to a node's control channel."""

    def __init__(self, sock: socket.socket, path: Path | str) -> None:
        self._sock = sock
        self.path = path
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        self._responses: dict[Any, dict[str, Any]] = {}

    @classmethod
    def connect(cls, path: Path, timeout: float | None = 60.0) -> ControlClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            with protocol.address(path) as connectable:
                sock.connect(connectable)
        except OSError as exc:
            sock.close()
            raise _unreachable(path, exc) from None
        return cls(sock, path)

    def set_timeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def request(self, command: str, args: dict[str, Any] | None = None, **fields: Any) -> Any:
        """Run a command; its result, or RemoteError / NodeUnreachable.

        ``fields`` are more fields of the request: ``nodes="all"`` runs it on every node of
        the cluster and returns ``{node: response}`` (see :mod:`roost.admin.protocol`).
        """
        return result_of(self.wait(self.send(command, args, **fields)))

    def send(self, command: str, args: dict[str, Any] | None = None, **fields: Any) -> int:
        request_id = next(self._ids)
        message = {**fields, "id": request_id, "command": command, "args": args or {}}
        try:
            self._sock.sendall(protocol.encode(message))
        except OSError as exc:
            # The node may have said why before it closed (a refused peer): read it.
            try:
                said = self._read()
            except NodeUnreachable:
                said = {}
            if said.get("id") is None and not said.get("ok", True):
                result_of(said)
            raise NodeUnreachable(f"the node closed the control connection: {exc}") from None
        return request_id

    def wait(self, request_id: int) -> dict[str, Any]:
        """The response to ``request_id`` (other responses are kept for their own wait)."""
        while request_id not in self._responses:
            message = self._read()
            if message.get("id") is None and not message.get("ok", True):
                result_of(message)  # the node refused the connection (or our framing)
            self._responses[message.get("id")] = message
        return self._responses.pop(request_id)

    def wait_closed(self) -> None:
        """Block until the node closes the connection (after ``stop``: once it stopped)."""
        try:
            while self._sock.recv(65536):
                pass
        except OSError:
            pass

    def _read(self) -> dict[str, Any]:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return json.loads(line)  # type: ignore[no-any-return]
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise NodeUnreachable("the node did not answer in time") from None
            except OSError as exc:
                raise NodeUnreachable(f"the control connection failed: {exc}") from None
            if not chunk:
                raise NodeUnreachable("the node closed the control connection")
            self._buffer += chunk

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncControlClient:
    """The control channel from asyncio code; also runs code in the node (``eval``/``call``).

    ``eval`` has the semantics of the shell (and of ``RunningServer.eval``), but across
    processes only JSON travels: the result is the JSON value of what the code evaluated to
    (None when it is not JSON-able; ``repr`` it in the code for a text form), and a failure
    raises RemoteError carrying the traceback.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._pump = asyncio.get_running_loop().create_task(self._receive())
        self._shell = False
        self._gone: Exception | None = None  # why the connection ended, once it has

    @classmethod
    async def connect(cls, path: Path) -> AsyncControlClient:
        try:
            with protocol.address(path) as connectable:
                reader, writer = await asyncio.open_unix_connection(
                    connectable, limit=protocol.MAX_MESSAGE
                )
        except OSError as exc:
            raise _unreachable(path, exc) from None
        return cls(reader, writer)

    async def request(self, command: str, args: dict[str, Any] | None = None, **fields: Any) -> Any:
        """As :meth:`ControlClient.request`."""
        if self._gone is not None:
            raise self._gone
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        message = {**fields, "id": request_id, "command": command, "args": args or {}}
        self._writer.write(protocol.encode(message))
        await self._writer.drain()
        return result_of(await future)

    async def eval(self, code: str) -> Any:
        if not self._shell:
            await self.request("shell")
            self._shell = True
        result = await self.request("eval", {"code": code})
        return result["value"]

    async def call(self, function: str, *args: Any) -> Any:
        """Call ``"package.module:function"`` with JSON-able ``args`` in the node."""
        module, _, name = function.partition(":")
        payload = json.dumps(list(args))
        return await self.eval(
            "import importlib as _importlib, inspect as _inspect, json as _json\n"
            f"_called = getattr(_importlib.import_module({module!r}), {name!r})"
            f"(*_json.loads({payload!r}))\n"
            "(await _called) if _inspect.isawaitable(_called) else _called\n"
        )

    async def _receive(self) -> None:
        error: Exception = NodeUnreachable("the node closed the control connection")
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                request_id = message.get("id")
                if request_id is None and not message.get("ok", True):
                    try:
                        result_of(message)  # the node refused the connection
                    except RemoteError as exc:
                        error = exc
                    break
                future = self._waiting.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(message)
        except (OSError, ValueError) as exc:
            error = NodeUnreachable(f"the control connection failed: {exc}")
        self._gone = error
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
