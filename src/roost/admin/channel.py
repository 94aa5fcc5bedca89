"""The control channel: a unix socket in the data directory, served on the node's loop.

Who may connect: the socket file is created with mode 0600 (bound under a temporary name,
restricted, then renamed into place, so it never exists at its real path with looser
permissions), and every connection's peer credentials (``SO_PEERCRED``) must show the uid
the node runs as, or root. Others get a ``forbidden`` error and are disconnected. The
socket never listens on the network; with ``admin.listen`` set, the same protocol is also
served over mutual TLS to administrators of the cluster (:mod:`roost.admin.remote`), without
the shell.

Who owns it: a node takes an exclusive ``flock`` on ``<socket>.lock`` before anything else
and holds it while it runs, so a second node on the same data directory refuses to start
(:class:`NodeRunning`) even when both start at once. The kernel releases the lock when a
node dies, however it dies; a socket file left behind by a dead node is stale and replaced.

What it speaks: :mod:`roost.admin.protocol`. Requests run concurrently as tasks of the
connection; when the client goes away they are cancelled (a shell evaluation included).
Shell evaluations and the commands that change state (``audit=True``) are appended to
``audit.log`` in the data directory (mode 0600), one JSON object per line with the time, the
peer's uid and pid (a remote administrator's name and address), and the code or the command
with its arguments (secrets left out).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from roost import __version__
from roost.admin import fanout, protocol
from roost.admin.commands import Command, CommandError, find
from roost.admin.config_sync import ConfigSync
from roost.admin.fanout import Fanout
from roost.admin.monitor import Monitor
from roost.admin.remote import RemoteListener
from roost.admin.shell import HELPERS, Evaluator, json_value

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.admin")

AUDIT_LOG: Final = "audit.log"
SHELL_OPERATIONS: Final = frozenset({"shell", "eval", "complete", "cancel"})


class NodeRunning(OSError):
    """Another live node owns the control socket (and so the data directory)."""


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is at the other end: a local process, or a remote administrator (``admin``)."""

    pid: int
    uid: int
    gid: int
    admin: str | None = None  # the name in a remote administrator's certificate
    address: str | None = None  # where a remote administrator connected from

    def audit_fields(self) -> dict[str, Any]:
        if self.admin is not None:
            return {"admin": self.admin, "address": self.address}
        return {"uid": self.uid, "pid": self.pid}


def peer_credentials(sock: Any) -> Peer:
    """The credentials of the process at the other end of a unix socket (Linux)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:  # pragma: no cover - not Linux
        raise OSError(errno.ENOTSUP, "peer credentials are not available on this system")
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def peer_allowed(uid: int, node_uid: int | None = None) -> bool:
    """Only the user the node runs as, and root, may administer it."""
    node_uid = os.geteuid() if node_uid is None else node_uid
    return uid in (node_uid, 0)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, peer: Peer | None, kind: str, **fields: Any) -> None:
        """Append an entry; ``peer`` is None for what the node did on its own (``sync``)."""
        entry = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            **({} if peer is None else peer.audit_fields()),
            "kind": kind,
            **fields,
        }
        line = json.dumps(entry, default=str) + "\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            log.exception("cannot write the audit log %s", self.path)


class ControlChannel:
    """The node's end of the control channel. See the module docstring."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self.monitor = Monitor(server)
        self.path: Path | None = None
        self._lock_fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of our socket file
        self._aserver: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self.remote: RemoteListener | None = None  # admin.listen
        # Commands for other nodes of the cluster, and from them (roost ctl --node/--all), and
        # the cluster-wide overrides a node missed.
        self.fanout: Fanout | None = None
        self.config_sync: ConfigSync | None = None
        if server.cluster is not None:
            self.fanout = Fanout(server, server.cluster.mesh)
            self.config_sync = ConfigSync(server, server.cluster.mesh)

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self._server.config.data_dir / AUDIT_LOG)

    def audit_command(
        self, peer: Peer, command: Command, bound: Mapping[str, Any], **fields: Any
    ) -> None:
        """Record a state-changing command (its secret arguments left out)."""
        public = {
            arg.name: bound[arg.name]
            for arg in command.args
            if not arg.secret and bound[arg.name] is not None
        }
        self.audit.record(peer, "command", command=command.name, args=public, **fields)

    # -- ownership ---------------------------------------------------------------------------

    def claim(self) -> None:
        """Own the socket path, or raise NodeRunning. Synchronous: runs before anything."""
        config = self._server.config
        path = protocol.socket_path(config.data_dir, config.admin_socket)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise NodeRunning(
                errno.EADDRINUSE,
                f"another roost node (pid {holder}) runs on {config.data_dir}: it holds {lock}",
            ) from None
        if _answers(path):
            # A node that holds no lock (its lock file was deleted) still owns a live socket.
            os.close(fd)
            raise NodeRunning(
                errno.EADDRINUSE, f"another roost node answers on the control socket {path}"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        self.path = path

    def release(self) -> None:
        if self.path is not None and self._identity is not None:
            with contextlib.suppress(OSError):
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._identity:
                    os.unlink(self.path)  # ours; a newer node's socket is left alone
        self._identity = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- serving -----------------------------------------------------------------------------

    async def start(self) -> None:
        path = self.path
        assert path is not None, "claim() first"
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with protocol.address(temporary) as bindable:
                sock.bind(bindable)
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)  # a stale socket of a dead node is replaced here
            st = os.stat(path)
            self._identity = (st.st_dev, st.st_ino)
            self._aserver = await asyncio.start_unix_server(
                self._accept, sock=sock, limit=protocol.MAX_MESSAGE
            )
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        listen = self._server.config.admin_listen
        if listen:
            await self._listen(listen)
        self.monitor.start()

    async def _listen(self, listen: str) -> None:
        from roost.cluster.node import listen_address

        cluster = self._server.cluster
        if cluster is None:
            raise ValueError(
                "admin.listen needs cluster.node: remote administration uses the cluster's "
                "certificates (roost cluster init)"
            )
        try:
            address = listen_address(listen)
        except ValueError as exc:
            raise ValueError(f"admin.listen: {exc}") from None
        self.remote = await RemoteListener.start(self, address, cluster.mesh.files)

    def stop_accepting(self) -> None:
        if self._aserver is not None:
            self._aserver.close()
        if self.remote is not None:
            self.remote.close()

    async def close(self) -> None:
        """Stop serving: close connections (cancelling their requests), remove the socket."""
        self.stop_accepting()
        self.monitor.stop()
        if self.fanout is not None:
            self.fanout.close()
        if self.config_sync is not None:
            self.config_sync.close()
        for connection in list(self._connections):
            await connection.close()
        self._aserver = None
        self.release()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = peer_credentials(writer.get_extra_info("socket"))
        except OSError as exc:
            log.warning("control channel: cannot read peer credentials: %s", exc)
            peer = None
        if peer is None or not peer_allowed(peer.uid):
            if peer is not None:
                log.warning(
                    "control channel: refused uid %d (pid %d): not the node's user nor root",
                    peer.uid,
                    peer.pid,
                )
            writer.write(
                protocol.encode(
                    protocol.error(
                        None, "forbidden", "only the user running the node, or root, may use it"
                    )
                )
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        await self.serve(reader, writer, peer, remote=False)

    async def serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
        *,
        remote: bool,
    ) -> None:
        """Serve one accepted connection until it ends (or the channel closes)."""
        connection = _Connection(self._server, self, reader, writer, peer, remote)
        self._connections.add(connection)
        try:
            await connection.serve()
        finally:
            self._connections.discard(connection)


class _Connection:
    def __init__(
        self,
        server: Server,
        channel: ControlChannel,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
        remote: bool,
    ) -> None:
        self._server = server
        self._channel = channel
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self._remote = remote  # over the network: no shell, no code
        self._tasks: set[asyncio.Task[None]] = set()
        self._evaluator: Evaluator | None = None
        self._serving: asyncio.Task[Any] | None = None

    async def serve(self) -> None:
        self._serving = asyncio.current_task()
        try:
            while True:
                try:
                    line = await self._reader.readline()
                except ValueError:  # longer than MAX_MESSAGE: the stream cannot be re-synced
                    self._send(protocol.error(None, "bad-request", "message too long"))
                    break
                except ConnectionError:
                    break
                if not line:
                    break
                try:
                    message = protocol.decode(line)
                except ValueError as exc:
                    self._send(protocol.error(None, "bad-request", f"not a JSON object: {exc}"))
                    continue
                task = asyncio.get_running_loop().create_task(self._handle(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except asyncio.CancelledError:
            pass
        finally:
            await self._finish()

    async def close(self) -> None:
        serving = self._serving
        if serving is not None and not serving.done():
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

    async def _finish(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._writer.drain()
        self._writer.close()

    def _send(self, message: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(protocol.encode(message))

    async def _handle(self, message: Mapping[str, Any]) -> None:
        request_id = message.get("id")
        name = message.get("command")
        args = message.get("args", {})
        if args is None:
            args = {}
        if not isinstance(name, str) or not isinstance(args, dict):
            self._send(
                protocol.error(request_id, "bad-request", "expected a command and args by name")
            )
            return
        try:
            if name in SHELL_OPERATIONS:
                self._local_only(name, True)
                result = await self._shell(request_id, name, args)
            else:
                command = find(name)
                self._local_only(name, command.evaluates)
                targets = message.get("nodes")
                if targets is None and command.cluster and self._server.cluster is not None:
                    targets = fanout.ALL  # cluster-wide by default
                if targets is not None:
                    await self._fan_out(request_id, command, args, targets, message)
                    return
                bound = command.bind(args)
                if command.audit:
                    self._audit(command, bound)
                result = await command.handler(self._server, **bound)
        except CommandError as exc:
            self._send(protocol.error(request_id, exc.code, exc.message, **exc.extra))
        except Exception as exc:
            log.exception("admin command %r failed", name)
            self._send(protocol.error(request_id, "internal-error", f"{type(exc).__name__}: {exc}"))
        else:
            self._send(protocol.response(request_id, result))
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    def _local_only(self, name: str, evaluates: bool) -> None:
        if self._remote and evaluates:
            raise CommandError(
                "local-only",
                f"'{name}' runs code in the node: only over the control socket on its machine",
            )

    def _audit(self, command: Command, bound: Mapping[str, Any], **fields: Any) -> None:
        self._channel.audit_command(self._peer, command, bound, **fields)

    async def _fan_out(
        self, request_id: Any, command: Command, args: Mapping[str, Any], raw: Any, message: Any
    ) -> None:
        """Run ``command`` on several nodes (:mod:`roost.admin.fanout`) and answer for all."""
        targets = fanout.check_targets(raw)
        timeout = message.get("node_timeout")
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise CommandError("bad-request", "'node_timeout' is a positive number of seconds")
        if command.audit and command.fanout:
            self._audit(command, command.bind(args), nodes=targets)
        replies = await fanout.run(
            self._server,
            command,
            args,
            targets,
            node_timeout=timeout,
            origin=self._peer.audit_fields(),
        )
        self._send(
            {
                "id": request_id,
                "ok": True,
                "node": fanout.node_name(self._server),
                "nodes": replies,
            }
        )
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    # -- shell mode --------------------------------------------------------------------------

    def _shell_allowed(self) -> None:
        if not self._server.config.admin_shell:
            raise CommandError(
                "shell-disabled", "the shell is disabled on this node (admin.shell = false)"
            )

    async def _shell(self, request_id: Any, name: str, args: Mapping[str, Any]) -> Any:
        if name == "shell":
            self._shell_allowed()
            if self._evaluator is None:
                self._evaluator = Evaluator(self._server)
            return {
                "node": socket.gethostname(),
                "pid": os.getpid(),
                "version": __version__,
                "domain": self._server.domain,
                "eval_timeout": self._server.config.admin_eval_timeout,
                "helpers": list(HELPERS),
            }
        evaluator = self._evaluator
        if evaluator is None:
            raise CommandError("shell-not-open", "send the 'shell' command first")
        if name == "cancel":
            return {"cancelled": evaluator.cancel(args.get("target"))}
        if name == "complete":
            text = args.get("text", "")
            if not isinstance(text, str):
                raise CommandError("bad-arguments", "'text' must be a string")
            return evaluator.complete(text)
        code = args.get("code")
        if not isinstance(code, str):
            raise CommandError("bad-arguments", "'code' must be a string")
        self._shell_allowed()  # admin.shell may have been turned off since the shell opened
        self._channel.audit.record(self._peer, "eval", code=code)
        timeout = self._server.config.admin_eval_timeout
        evaluation = await evaluator.evaluate(code, limit=timeout, key=request_id)
        output = {"stdout": evaluation.stdout, "stderr": evaluation.stderr}
        if evaluation.status != "ok":
            raise CommandError(evaluation.status, evaluation.traceback, **output)
        value = evaluation.value
        return {
            "repr": None if value is None else evaluation.repr(),
            "value": json_value(value),
            **output,
        }


def _answers(path: Path) -> bool:
    """True when something accepts connections on the socket at ``path``."""
    if not path.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        with protocol.address(path) as connectable:
            probe.connect(connectable)
    except OSError:
        return False
    finally:
        probe.close()
    return True
