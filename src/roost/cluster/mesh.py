"""The node-to-node mesh: one authenticated link per pair of nodes, carrying typed messages.

Every node of a roost cluster holds a TLS link to every other (a full mesh). Process groups,
the router and administration share those links through *channels*: a user subscribes a
handler to a channel name and sends messages to a node on a channel. This module is the thin
asyncio driver; the wire protocol is :mod:`roost.cluster.framing` (Sans-I/O) and one connection
is :class:`roost.cluster.mesh_link.Link`.

Security. Links are TLS 1.3 only, with both certificates required and verified against the
cluster CA (:mod:`roost.cluster.ca`); the name a peer gives in its hello must be the node name
its certificate carries, and when we dial a member we know, the name we expect. Anything else is
refused and logged with the reason (a warning).

One link per pair. Both nodes of a pair may dial each other at once. The node whose name sorts
first is the pair's *arbiter*: after the hellos it answers ``welcome`` on the first link that
completes and ``bye("duplicate link")`` on any other while that one is up; the other node
treats a link as up only on ``welcome``. So both sides always agree on the surviving link, and
no link goes up and down again because of a race. Two exceptions replace the standing link: a
hello with a new incarnation (the peer restarted, so the old link is dead), and a ``welcome``
for a new link on the non-arbiter side (the arbiter has already dropped the old one).

Liveness. Every ``heartbeat_interval`` each link gets a ping; a link on which nothing at all
arrived for ``heartbeat_timeout`` is declared dead and dropped. A handshake not finished within
``handshake_timeout`` is dropped too. Lost members are redialled with exponential backoff
(``backoff_initial`` doubling to ``backoff_max``, each delay scaled by a random factor in
[0.5, 1] so that a cluster does not reconnect in lockstep); both ends of a lost link redial, and
the arbiter rule keeps one.

Memory. Writes never block: frames are queued on the link and flushed once per loop turn. A
peer that does not read while ``max_buffer`` bytes wait for it is disconnected (then redialled
as usual), so a stuck node costs its peers at most that much each. (A burst of more than
``max_buffer`` queued within one loop turn counts the same: send large state in pieces.)
Incoming frames are bounded by ``max_frame_size`` (see framing).

Discovery. ``seeds`` are addresses to dial first, names unknown. On every new link each side
sends the members it knows (name → advertised address, itself included); a node that learns a
new member dials it and passes the news on to its other peers, so a node joining through any
one seed ends up linked to all. A node's own entry is authoritative for its address. Members
are never forgotten: an absent node is redialled at ``backoff_max`` intervals until it returns.

Using it::

    mesh = Mesh("n1", data_dir, listen=("10.0.0.1", 7400), seeds=["10.0.0.2:7400"])
    mesh.subscribe("pg:default", handler, type=PgMessage)   # handler(node, message)
    mesh.on_peer_up(lambda peer: ...)                       # peer: Peer(name, incarnation, ...)
    await mesh.start()
    mesh.send("n2", "pg:default", PgMessage(...))           # False if n2 is not linked now
    mesh.broadcast("pg:default", PgMessage(...))            # to every linked peer

Messages are anything msgspec encodes to MessagePack: None, bool, int (64-bit), float, str,
bytes, lists, tuples, dicts, sets, ``msgspec.Struct`` (tagged unions too), dataclasses, enums,
datetimes, UUIDs, decimals. A subscriber gives the type it expects (``type=``, any type msgspec
decodes, e.g. ``MyStruct`` or ``A | B``); messages are decoded and validated into it, and a
message that does not fit is a protocol error that closes the link (the peers disagree on the
channel's schema; the link comes back and the error is logged each time). Without ``type`` a
message arrives as builtins (dict, list, str, ...). Design channel messages to evolve: add
fields with defaults; msgspec ignores fields it does not know.

Guarantees: messages between two nodes on one link arrive in the order sent; a message sent
when the link is down is refused (``send`` returns False), and messages in flight when a link
fails may be lost. For each peer, ``peer_up`` and ``peer_down`` alternate, starting with up; no
message from a link is delivered before its ``peer_up`` or after its ``peer_down``. The peer's
incarnation (random per process start) tells a restart from a reconnection, so a user that
keeps per-peer state knows when to resynchronise. Handlers and callbacks run on the event loop
and must not block; an exception in one is logged and does not affect the link.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import msgspec

from roost.cluster.ca import CAError, ClusterFiles, validate_name
from roost.cluster.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    App,
    CorruptFrame,
    Hello,
    Member,
    Members,
    Ping,
    Welcome,
    encode_message,
)
from roost.cluster.mesh_link import DUPLICATE, Link
from roost.cluster.mesh_tls import check_credentials, client_context, server_context
from roost.cluster.mesh_types import (
    DEFAULT_PORT,
    Address,
    LinkStatistics,
    MeshStatistics,
    Peer,
    addresses,
    format_address,
    parse_address,
)

__all__ = [
    "DEFAULT_PORT",
    "Address",
    "LinkStatistics",
    "Mesh",
    "MeshStatistics",
    "Peer",
    "addresses",
    "parse_address",
]

log = logging.getLogger("roost.cluster.mesh")


class _Subscription:
    __slots__ = ("decoder", "handler")

    def __init__(self, handler: Callable[[str, Any], object], type_: Any) -> None:
        self.handler = handler
        self.decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(type_)


class _Member:
    __slots__ = ("address", "changed", "failures", "incarnation", "name", "task")

    def __init__(self, name: str, address: Address | None) -> None:
        self.name = name
        self.address = address
        self.changed = asyncio.Event()  # set when the member's link or address changes
        self.failures = 0
        self.incarnation: int | None = None
        self.task: asyncio.Task[None] | None = None


class Mesh:
    """See the module docstring."""

    def __init__(
        self,
        node: str,
        credentials: Path | ClusterFiles,
        *,
        listen: Address = ("127.0.0.1", DEFAULT_PORT),
        seeds: Iterable[Address | str] = (),
        advertise: Address | None = None,
        capabilities: Iterable[str] = (),
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
        handshake_timeout: float = 5.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_buffer: int = 64 * 1024 * 1024,
    ) -> None:
        """``credentials`` is a data directory (its ``cluster/``) or explicit paths."""
        self.node = validate_name(node)
        self.files = (
            credentials
            if isinstance(credentials, ClusterFiles)
            else ClusterFiles.in_data_dir(credentials)
        )
        self.listen = listen
        self.seeds = [parse_address(s) if isinstance(s, str) else s for s in seeds]
        self._advertise = advertise
        self.incarnation = secrets.randbits(63)
        if heartbeat_timeout <= heartbeat_interval:
            raise ValueError("heartbeat_timeout must be longer than heartbeat_interval")
        if max_buffer <= max_frame_size:
            raise ValueError("max_buffer must be larger than max_frame_size")
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.handshake_timeout = handshake_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frame_size = max_frame_size
        self.max_buffer = max_buffer
        self._hello = Hello(
            node=self.node,
            version=PROTOCOL_VERSION,
            incarnation=self.incarnation,
            capabilities=tuple(sorted(set(capabilities))),
            min_version=MIN_PROTOCOL_VERSION,
        )
        self._links: dict[str, Link] = {}  # established, by peer name
        self._all: set[Link] = set()  # every open connection, established or not
        self._members: dict[str, _Member] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._up_callbacks: list[Callable[[Peer], object]] = []
        self._down_callbacks: list[Callable[[Peer], object]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._address: Address | None = None
        self._unreachable: set[Address] = set()
        self._running = False
        self._stats = MeshStatistics(self.node, self.incarnation)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, then dial the seeds; returns once listening (links come up on their own).

        A mesh is started once; raises :class:`~roost.cluster.mesh_tls.CredentialsError` when
        this node's certificate is missing or does not fit, and :class:`OSError` when the
        address cannot be listened on.
        """
        if self._server is not None:
            raise RuntimeError("a mesh is started once")
        host, port = self.listen
        if self._advertise is None and host in ("", "0.0.0.0", "::"):
            raise ValueError(f"listening on {host!r}: give the address peers should dial")
        check_credentials(self.files, self.node)
        self._server_context = server_context(self.files)
        self._client_context = client_context(self.files)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Link(self, self._server_context, outgoing=False), host, port
        )
        bound = self._server.sockets[0].getsockname()
        self._address = (host, int(bound[1]))
        self._running = True
        self._spawn(self._heartbeat())
        for seed in self.seeds:
            self._spawn(self._join(seed))
        log.info(
            "mesh node %r listening on %s:%d (advertised as %s:%d)",
            self.node,
            *self._address,
            *self.address,
        )

    async def stop(self) -> None:
        """Close every link (with a bye), stop listening and dialling."""
        if not self._running:
            return
        self._running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        links = list(self._all)
        for link in links:
            link.close("node stopping")
        if links:
            done = asyncio.gather(*(link.closed for link in links))
            try:
                async with asyncio.timeout(self.handshake_timeout):
                    await done
            except TimeoutError:
                for link in links:
                    if link.transport is not None:
                        link.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        log.info("mesh node %r stopped", self.node)

    @property
    def address(self) -> Address:
        """The address other nodes dial to reach this one (known once started)."""
        if self._advertise is not None:
            return self._advertise
        if self._address is None:
            raise RuntimeError("the mesh is not started")
        return self._address

    # -- the API for users ----------------------------------------------------------------------

    def subscribe(
        self, channel: str, handler: Callable[[str, Any], object], type: Any = Any
    ) -> None:
        """Call ``handler(node, message)`` for messages on ``channel``, decoded as ``type``."""
        if channel in self._subscriptions:
            raise ValueError(f"channel {channel!r} already has a subscriber")
        self._subscriptions[channel] = _Subscription(handler, type)

    def unsubscribe(self, channel: str) -> None:
        self._subscriptions.pop(channel, None)

    def send(self, node: str, channel: str, message: object) -> bool:
        """Send ``message`` to ``node`` on ``channel``, without waiting.

        Returns False when ``node`` has no established link (or the link just dropped because
        the peer is too slow). Raises :class:`~roost.cluster.framing.LocalProtocolError` for a
        message msgspec cannot encode or one larger than the frame limit.
        """
        link = self._links.get(node)
        if link is None:
            return False
        return link.send(App(channel, encode_message(message)))

    def broadcast(self, channel: str, message: object) -> int:
        """Send ``message`` to every linked peer; returns how many it was sent to."""
        if not self._links:
            return 0
        raw = encode_message(message)  # once, whatever the number of peers
        return sum(link.send(App(channel, raw)) for link in list(self._links.values()))

    def on_peer_up(self, callback: Callable[[Peer], object]) -> None:
        self._up_callbacks.append(callback)

    def on_peer_down(self, callback: Callable[[Peer], object]) -> None:
        self._down_callbacks.append(callback)

    def peers(self) -> dict[str, Peer]:
        """The nodes linked now."""
        return {name: _peer(link) for name, link in self._links.items()}

    def members(self) -> dict[str, Address | None]:
        """Every node known, linked or not, with the address it advertises."""
        return {name: member.address for name, member in self._members.items()}

    def disconnect(self, node: str, reason: str = "disconnected by an administrator") -> bool:
        """Close the link to ``node`` (it is redialled as after any loss)."""
        link = self._links.get(node)
        if link is None:
            return False
        link.close(reason)
        return True

    def statistics(self) -> MeshStatistics:
        """Counters since start, and the links now (a snapshot: later changes do not show)."""
        return dataclasses.replace(
            self._stats,
            members=len(self._members),
            links=self._link_statistics(),
        )

    def _link_statistics(self) -> dict[str, LinkStatistics]:
        return {
            name: LinkStatistics(
                incarnation=_peer(link).incarnation,
                outgoing=link.outgoing,
                version=link.conn.version or 0,
                up_for=link.loop_time() - link.established_at,
                frames_in=link.frames_in,
                frames_out=link.frames_out,
                bytes_in=link.bytes_in,
                bytes_out=link.bytes_out,
                buffered=link.buffered,
                rtt=link.rtt,
            )
            for name, link in self._links.items()
        }

    # -- events from links ----------------------------------------------------------------------

    def _link_opened(self, link: Link) -> bool:
        if not self._running:
            link.abort("node stopping")
            return False
        self._all.add(link)
        return True

    def _hello_received(self, link: Link, hello: Hello) -> None:
        name = hello.node
        if name == self.node:
            if hello.incarnation == self.incarnation:
                link.close("connected to ourselves", bye=False)  # a seed that is us: not an error
            else:
                link.refuse(f"another node calls itself {name!r}, our name")
            return
        if not link.arbiter:
            return  # the peer decides; we wait for its welcome or bye
        current = self._links.get(name)
        if current is not None:
            if _peer(current).incarnation == hello.incarnation:
                link.close(DUPLICATE)
                return
            current.close(f"{name!r} restarted", bye=False)
        link.send(Welcome())
        self._establish(link)

    def _establish(self, link: Link) -> None:
        name = link.peer
        assert name is not None
        assert link.conn.peer is not None
        current = self._links.get(name)
        if current is not None and current is not link:
            current.close("replaced by a new link", bye=False)
        link.established = True
        link.established_at = asyncio.get_running_loop().time()
        self._links[name] = link
        self._stats.links_up += 1
        incarnation = link.conn.peer.incarnation
        member = self._members.get(name)
        if member is None:
            member = self._add_member(name, link.address if link.outgoing else None)
        elif member.address is None and link.outgoing:
            member.address = link.address
        restarted = member.incarnation is not None and member.incarnation != incarnation
        member.incarnation = incarnation
        member.failures = 0
        member.changed.set()
        log.info(
            "peer %s up (%s, protocol %d%s)",
            link.label,
            "outgoing" if link.outgoing else "incoming",
            link.conn.version,
            ", restarted" if restarted else "",
        )
        link.send(Members(self._member_list()))
        if not link.handshake.done():
            link.handshake.set_result(True)
        peer = _peer(link)
        for callback in list(self._up_callbacks):
            if link.closing:
                break
            _call(callback, peer, "peer_up")

    def _link_closed(self, link: Link) -> None:
        self._all.discard(link)
        name = link.peer
        if not link.established or name is None or self._links.get(name) is not link:
            return
        del self._links[name]
        self._stats.links_down += 1
        log.info("peer %s down: %s", link.label, link.reason)
        member = self._members.get(name)
        if member is not None:
            member.changed.set()
        peer = _peer(link)
        for callback in list(self._down_callbacks):
            _call(callback, peer, "peer_down")

    def _deliver(self, link: Link, frame: App) -> None:
        subscription = self._subscriptions.get(frame.channel)
        if subscription is None:
            self._stats.unrouted += 1
            log.debug("message from %s on channel %r: no subscriber", link.label, frame.channel)
            return
        try:
            message = subscription.decoder.decode(frame.message)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            # The nodes disagree on the channel's schema: as corrupt as a bad frame.
            raise CorruptFrame(
                f"message on channel {frame.channel!r} does not decode: {exc}"
            ) from None
        try:
            subscription.handler(link.peer or "", message)
        except Exception:
            log.exception(
                "the subscriber of channel %r failed on a message from %s",
                frame.channel,
                link.label,
            )

    def _members_received(self, link: Link, frame: Members) -> None:
        changed = False
        for entry in frame.members:
            if entry.name == self.node:
                continue
            try:
                validate_name(entry.name)
            except CAError:
                continue  # not a name a certificate could carry: nothing to dial
            if not entry.host or not 0 < entry.port < 65536:
                continue
            address = (entry.host, entry.port)
            member = self._members.get(entry.name)
            if member is None:
                self._add_member(entry.name, address)
                changed = True
            elif member.address != address and (member.address is None or entry.name == link.peer):
                # A node's own word on its address beats what others relay.
                member.address = address
                member.changed.set()
                changed = True
        if changed:
            update = Members(self._member_list())
            for other in list(self._links.values()):
                if other is not link:
                    other.send(update)

    # -- members and dialling -------------------------------------------------------------------

    def _member_list(self) -> tuple[Member, ...]:
        entries = [Member(self.node, *self.address)]
        entries += [Member(m.name, *m.address) for m in self._members.values() if m.address]
        return tuple(entries)

    def _add_member(self, name: str, address: Address | None) -> _Member:
        member = self._members[name] = _Member(name, address)
        if address is None:
            log.info("learned of node %r (it dialled us)", name)
        else:
            log.info("learned of node %r at %s", name, format_address(address))
        if self._running:
            member.task = self._spawn(self._maintain(member))
        return member

    async def _maintain(self, member: _Member) -> None:
        """Keep a link to ``member``: redial with backoff whenever there is none."""
        while True:
            if member.name in self._links:
                member.changed.clear()
                await member.changed.wait()
                if member.name in self._links:
                    continue
                delay = self._backoff(1)  # lost: a short pause, then redial
            elif member.address is None:
                member.changed.clear()
                await member.changed.wait()  # until its address is known or it links to us
                continue
            else:
                await self._dial(member.address, expect=member.name)
                if member.name in self._links:
                    continue
                member.failures += 1
                delay = self._backoff(member.failures)
            member.changed.clear()
            if member.name in self._links:
                continue
            try:
                async with asyncio.timeout(delay):
                    await member.changed.wait()
            except TimeoutError:
                pass

    async def _join(self, address: Address) -> None:
        """Dial a seed until it answers with a name; then it is a member like any other."""
        failures = 0
        while True:
            link = await self._dial(address, expect=None)
            if link is not None and link.peer is not None:
                if link.peer != self.node and link.peer not in self._members:
                    self._add_member(link.peer, address)
                return
            failures += 1
            await asyncio.sleep(self._backoff(failures))

    async def _dial(self, address: Address, *, expect: str | None) -> Link | None:
        loop = asyncio.get_running_loop()
        link = Link(self, self._client_context, outgoing=True, expect=expect, address=address)
        try:
            async with asyncio.timeout(self.handshake_timeout):
                await loop.create_connection(lambda: link, *address)
        except (OSError, TimeoutError) as exc:
            self._stats.dial_failures += 1
            # Said once per outage (then at debug level), not at every attempt.
            log.log(
                logging.DEBUG if address in self._unreachable else logging.INFO,
                "cannot reach %s at %s: %s",
                repr(expect) if expect else "the seed",
                format_address(address),
                exc or "timed out",
            )
            self._unreachable.add(address)
            link.abort("could not connect")
            return None
        self._unreachable.discard(address)
        await link.handshake  # settled by the handshake, or by the heartbeat's timeout
        return link

    def _backoff(self, failures: int) -> float:
        base = min(self.backoff_max, self.backoff_initial * 2.0 ** max(0, failures - 1))
        return base * random.uniform(0.5, 1.0)

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            now = loop.time()
            for link in list(self._all):
                if link.closing:
                    continue
                if not link.established:
                    if now - link.created_at > self.handshake_timeout:
                        link.refuse("handshake timed out", bye=False)
                elif now - link.last_received > self.heartbeat_timeout:
                    self._stats.heartbeat_timeouts += 1
                    log.warning(
                        "peer %s silent for %.1f s: declaring it down",
                        link.label,
                        now - link.last_received,
                    )
                    link.abort(f"no heartbeat for {self.heartbeat_timeout} s", logged=True)
                else:
                    link.send(Ping(now))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("mesh task failed", exc_info=task.exception())

    def __repr__(self) -> str:
        return f"<Mesh {self.node!r} peers={sorted(self._links)}>"


def _peer(link: Link) -> Peer:
    hello = link.conn.peer
    assert hello is not None
    assert link.peer is not None
    return Peer(
        name=link.peer,
        incarnation=hello.incarnation,
        version=link.conn.version or 0,
        capabilities=link.conn.capabilities,
        outgoing=link.outgoing,
    )


def _call(callback: Callable[[Peer], object], peer: Peer, what: str) -> None:
    try:
        callback(peer)
    except Exception:
        log.exception("a %s callback failed for %r", what, peer.name)
