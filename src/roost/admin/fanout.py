"""Admin commands across a cluster: ``roost ctl --node NAME`` and ``roost ctl --all``.

A request for other nodes arrives on the control channel of one node, *the asking node*, like
any other (``"nodes": "all"`` or a list of names; see :mod:`roost.admin.protocol`). The asking
node validates it once (the command may run elsewhere, the arguments fit, the names are nodes
of the cluster), runs the command's handler itself if it is one of the targets, sends it to
the other targets over the mesh, and answers with one response per node::

    {"a": {"ok": true, "result": ...}, "b": {"ok": false, "error": {"code": ..., ...}}}

The nodes are those of the mesh (:meth:`~roost.cluster.mesh.Mesh.members`): every node this
one has linked to or heard of, linked now or not. A node never forgets a member, so a node
that is down still appears, as an error.

Wire. Mesh channel ``admin``, three messages (:data:`AdminMessage`): :class:`Request`
(an id chosen by the asking node, the command, its arguments and who asked, as JSON),
:class:`Reply` (the id, and the response as the control channel would have sent it, as JSON)
and :class:`Cancel` (the asking node gave up). Arguments and results travel as JSON text
rather than MessagePack structures so that a result is exactly what the control channel
would have printed (``default=str`` for paths and the like, tuples as lists) and so that the
mesh needs no schema of the admin commands.

Trust. Mesh links are mutual TLS with the cluster CA: whatever sends on this channel holds a
node certificate of the cluster, which already lets it route any user's stanzas. Still, a
node runs for the mesh only commands declared ``fanout=True`` (never the shell, ``bench`` or
account changes), and records those that change state in its audit log with the asking node
and the uid and pid of the ``roost ctl`` process there.

Failures never hang a command. A node without a link now is reported at once
(``node-unreachable``); a link lost while waiting fails that node's request at once (same
code); a node that does not answer within the node timeout (``admin.node_timeout`` or the
request's ``node_timeout``) is reported as ``node-timeout`` and sent a :class:`Cancel`. A
result too large for one mesh frame comes back as ``too-large``. The asking node's own part
runs with no timeout, as it would without ``--all``.

Everywhere. A request for every node (``--all``, or a cluster-wide command by default) carries
a stamp: the asking node's clock and name. Handlers read it with :func:`everywhere`; ``config
set`` records it, so that a node that was away catches up later (:mod:`roost.admin.config_sync`).

Order. Nodes run the command concurrently, with two exceptions. A command that changes state
runs on the asking node first; if it fails there with a usage error (a value the schema
refuses, say), that error is the answer and no other node is asked, since it would fail
alike everywhere. ``stop`` runs on the asking node last: first every other target is asked
and its link awaited until it drops (the node stopped) or the node timeout passes, so that
``roost ctl stop --all`` returns when the cluster is down and the asking node's control
channel is the last thing to close.
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import json
import logging
import socket
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

import msgspec

from roost.admin import protocol
from roost.admin.commands import Command, CommandError, find
from roost.cluster.framing import LocalProtocolError

if TYPE_CHECKING:
    from roost.cluster.mesh import Mesh
    from roost.cluster.mesh_types import Peer
    from roost.core.server import Server

log = logging.getLogger("roost.admin.fanout")

CHANNEL: Final = "admin"
ALL: Final = "all"

Response = dict[str, Any]  # {"ok": true, "result": ...} or {"ok": false, "error": {...}}


class Everywhere(msgspec.Struct, array_like=True, frozen=True, order=True):
    """A command runs on every node of the cluster: when, and who asked."""

    time: float  # the asking node's clock (time.time())
    node: str  # the asking node


class Request(msgspec.Struct, tag="request", array_like=True, frozen=True):
    id: int
    command: str
    args: bytes  # a JSON object: the arguments by name, as the asking node validated them
    origin: bytes  # a JSON object: who asked ({"uid", "pid"}, or {"admin", "address"}), for audit
    everywhere: Everywhere | None = None  # set when the request goes to every node


class Reply(msgspec.Struct, tag="reply", array_like=True, frozen=True):
    id: int
    response: bytes  # a JSON object: {"ok": true, "result": ...} or {"ok": false, "error": ...}


class Cancel(msgspec.Struct, tag="cancel", array_like=True, frozen=True):
    id: int


AdminMessage = Request | Reply | Cancel


_EVERYWHERE: ContextVar[Everywhere | None] = ContextVar("roost_admin_everywhere", default=None)


def everywhere() -> Everywhere | None:
    """In a command handler: the stamp of the cluster-wide request it serves, if it does."""
    return _EVERYWHERE.get()


def node_name(server: Server) -> str:
    """The node's name: its cluster name, or the host name of a node on its own."""
    return server.cluster.name if server.cluster is not None else socket.gethostname()


def failure(code: str, message: str, **extra: Any) -> Response:
    return {"ok": False, "error": {"code": code, "message": message, **extra}}


async def outcome(server: Server, command: Command, bound: Mapping[str, Any]) -> Response:
    """Run a command's handler here; its response, failures included."""
    try:
        return {"ok": True, "result": await command.handler(server, **bound)}
    except CommandError as exc:
        return failure(exc.code, exc.message, **exc.extra)
    except Exception as exc:
        log.exception("admin command %r failed", command.name)
        return failure("internal-error", f"{type(exc).__name__}: {exc}")


def check_targets(raw: Any) -> str | list[str]:
    """The ``nodes`` field of a request, validated. Raises CommandError("bad-request")."""
    if raw == ALL:
        return ALL
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(n, str) and n for n in raw):
        raise CommandError("bad-request", "'nodes' is \"all\" or a list of node names")
    return list(dict.fromkeys(raw))


async def run(
    server: Server,
    command: Command,
    raw: Mapping[str, Any],
    targets: str | list[str],
    *,
    node_timeout: float | None = None,
    origin: Mapping[str, Any] | None = None,
) -> dict[str, Response]:
    """Run ``command`` on ``targets`` ("all" or names); a response per node, by name.

    Raises CommandError for what is wrong wherever it would run: a command that runs on one
    node only, bad arguments, an unknown node. A node on its own is a cluster of one.
    """
    if not command.fanout:
        raise CommandError(
            "bad-target", f"'{command.name}' runs on one node only: --node and --all do not apply"
        )
    bound = command.bind(raw)
    fanout = server.control.fanout
    if fanout is None:
        name = node_name(server)
        _known([name] if isinstance(targets, str) else targets, [name])
        return {name: await outcome(server, command, bound)}
    limit = server.config.admin_node_timeout if node_timeout is None else node_timeout
    return await fanout.run(command, bound, targets, limit, origin or {})


def _known(names: list[str], known: list[str]) -> None:
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise CommandError(
                "unknown-node", f"no node '{name}' in the cluster ({', '.join(known)}){hint}"
            )


class Fanout:
    """The ``admin`` mesh channel of one clustered node: both the asking and the answering
    side (see the module docstring)."""

    def __init__(self, server: Server, mesh: Mesh) -> None:
        self._server = server
        self._mesh = mesh
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[str, asyncio.Future[Response]]] = {}
        self._serving: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._down: dict[str, list[asyncio.Future[None]]] = {}
        self.sent = 0
        self.served = 0
        self.timeouts = 0
        mesh.subscribe(CHANNEL, self._receive, type=AdminMessage)
        mesh.on_peer_down(self._peer_down)

    @property
    def node(self) -> str:
        return self._mesh.node

    def known(self) -> list[str]:
        """Every node of the cluster this node knows of, itself included, sorted."""
        return sorted({self.node, *self._mesh.members()})

    def close(self) -> None:
        self._mesh.unsubscribe(CHANNEL)
        for task in list(self._serving.values()):
            task.cancel()

    def statistics(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "served": self.served,
            "timeouts": self.timeouts,
            "waiting": len(self._waiting),
            "serving": len(self._serving),
        }

    def __repr__(self) -> str:
        return f"<Fanout {self.node!r} waiting={len(self._waiting)} serving={len(self._serving)}>"

    # -- asking ------------------------------------------------------------------------------

    async def run(
        self,
        command: Command,
        bound: dict[str, Any],
        targets: str | list[str],
        limit: float,
        origin: Mapping[str, Any],
    ) -> dict[str, Response]:
        known = self.known()
        names = known if isinstance(targets, str) else list(targets)
        _known(names, known)
        stamp = Everywhere(time.time(), self.node) if isinstance(targets, str) else None
        token = _EVERYWHERE.set(stamp)  # tasks created below inherit it
        try:
            return await self._run(command, bound, names, limit, origin)
        finally:
            _EVERYWHERE.reset(token)

    async def _run(
        self,
        command: Command,
        bound: dict[str, Any],
        names: list[str],
        limit: float,
        origin: Mapping[str, Any],
    ) -> dict[str, Response]:
        others = [name for name in names if name != self.node]
        here = self.node in names
        responses: dict[str, Response] = {}
        if command.name == "stop":
            responses = await self._stop(command, bound, others, limit, origin)
            if here:
                responses[self.node] = await outcome(self._server, command, bound)
            return dict(sorted(responses.items()))
        if here and command.audit:
            first = responses[self.node] = await outcome(self._server, command, bound)
            error = first.get("error")
            if error is not None and protocol.exit_code(error["code"]) == protocol.EXIT_USAGE:
                raise CommandError(**error)
            here = False
        calls = [self.call(name, command, bound, limit, origin) for name in others]
        if here:
            calls.append(outcome(self._server, command, bound))
            others = [*others, self.node]
        for name, response in zip(others, await asyncio.gather(*calls), strict=True):
            responses[name] = response
        return dict(sorted(responses.items()))

    async def call(
        self,
        node: str,
        command: Command,
        bound: Mapping[str, Any],
        limit: float,
        origin: Mapping[str, Any],
    ) -> Response:
        """Run ``command`` on ``node`` over the mesh; its response, or why there is none."""
        request_id = next(self._ids)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        request = Request(request_id, command.name, _json(bound), _json(origin), everywhere())
        self._waiting[request_id] = (node, future)
        try:
            try:
                sent = self._mesh.send(node, CHANNEL, request)
            except LocalProtocolError as exc:
                return failure("too-large", f"the request does not fit in a mesh frame: {exc}")
            if not sent:
                return failure("node-unreachable", f"{node} is not linked to {self.node} now")
            self.sent += 1
            try:
                async with asyncio.timeout(limit):
                    return await future
            except TimeoutError:
                self.timeouts += 1
                self._mesh.send(node, CHANNEL, Cancel(request_id))
                return failure("node-timeout", f"{node} did not answer within {limit:g} s")
            except asyncio.CancelledError:
                self._mesh.send(node, CHANNEL, Cancel(request_id))  # whoever asked went away
                raise
        finally:
            self._waiting.pop(request_id, None)

    async def _stop(
        self,
        command: Command,
        bound: Mapping[str, Any],
        others: list[str],
        limit: float,
        origin: Mapping[str, Any],
    ) -> dict[str, Response]:
        loop = asyncio.get_running_loop()
        down: dict[str, asyncio.Future[None]] = {}
        for name in others:
            down[name] = loop.create_future()
            self._down.setdefault(name, []).append(down[name])
        try:
            calls = [self.call(name, command, bound, limit, origin) for name in others]
            responses = dict(zip(others, await asyncio.gather(*calls), strict=True))
            stopping = [name for name in others if responses[name]["ok"]]
            if stopping:
                await asyncio.wait([down[name] for name in stopping], timeout=limit)
            for name in stopping:
                responses[name]["result"]["stopped"] = down[name].done()
            return responses
        finally:
            for name, future in down.items():
                waiters = self._down.get(name, [])
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    self._down.pop(name, None)

    # -- mesh events ---------------------------------------------------------------------------

    def _peer_down(self, peer: Peer) -> None:
        for request_id, (node, future) in list(self._waiting.items()):
            if node == peer.name and not future.done():
                future.set_result(
                    failure("node-unreachable", f"the link to {node} was lost before it answered")
                )
                del self._waiting[request_id]
        for key, task in list(self._serving.items()):
            if key[0] == peer.name:
                task.cancel()  # nobody to answer any more
        for stopped in self._down.pop(peer.name, []):
            if not stopped.done():
                stopped.set_result(None)

    def _receive(self, node: str, message: Any) -> None:
        if isinstance(message, Reply):
            entry = self._waiting.get(message.id)
            if entry is None or entry[0] != node or entry[1].done():
                return  # too late (timed out, cancelled), or not ours
            try:
                response = protocol.decode(message.response)
            except ValueError:
                response = failure("internal-error", f"{node} sent an unreadable reply")
            entry[1].set_result(response)
        elif isinstance(message, Request):
            key = (node, message.id)
            task = self._server.spawn(self._serve(node, message))
            self._serving[key] = task
            task.add_done_callback(lambda _: self._serving.pop(key, None))
        else:
            serving = self._serving.get((node, message.id))
            if serving is not None:
                serving.cancel()

    # -- answering -----------------------------------------------------------------------------

    async def _serve(self, node: str, request: Request) -> None:
        try:
            response = await self._answer(node, request)
        except asyncio.CancelledError:
            return  # the asking node gave up, or went away
        self.served += 1
        try:
            sent = self._mesh.send(node, CHANNEL, Reply(request.id, protocol.encode(response)))
        except LocalProtocolError as exc:
            too_large = failure("too-large", f"the result of {self.node} does not fit: {exc}")
            sent = self._mesh.send(node, CHANNEL, Reply(request.id, protocol.encode(too_large)))
        if not sent:
            log.info("cannot answer %s's %r: the link is gone", node, request.command)

    async def _answer(self, node: str, request: Request) -> Response:
        try:
            command = find(request.command)
            if not command.fanout:
                raise CommandError("bad-target", f"'{command.name}' runs on one node only")
            raw = protocol.decode(request.args)
            origin = protocol.decode(request.origin)
            bound = command.bind(raw)
        except CommandError as exc:
            return failure(exc.code, exc.message, **exc.extra)
        except ValueError as exc:
            return failure("bad-request", f"unreadable request: {exc}")
        if command.audit:
            from roost.admin.channel import Peer

            admin = origin.get("admin")
            peer = Peer(
                _int(origin.get("pid")),
                _int(origin.get("uid")),
                -1,
                admin=admin if isinstance(admin, str) else None,
                address=str(origin.get("address")),
            )
            self._server.control.audit_command(peer, command, bound, from_node=node)
        token = _EVERYWHERE.set(request.everywhere)
        try:
            return await outcome(self._server, command, bound)
        finally:
            _EVERYWHERE.reset(token)


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1
