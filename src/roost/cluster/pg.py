"""Process groups across the cluster, after Erlang/OTP's ``pg``, as a Sans-I/O protocol core.

A *member* (an opaque hashable value, e.g. ``(session_id, resource, priority)``) joins named
*groups*; any node can then read a group's members, its own and those of the nodes it is linked
to. The router's use: a group per bare JID whose members are that account's sessions, on
whichever node they are connected.

Scopes. Groups live in a *scope*; scopes are independent overlays with their own membership, so
unrelated users of process groups do not see each other's groups or pay for each other's
traffic. A :class:`Scope` is one node's instance of one scope. It does no I/O and reads no
clock: the driver (the mesh, or :mod:`roost.cluster.pg_sim` in tests) tells it about links and
messages and sends what it queued.

Local API. ``join(group, *members)`` (a member may join a group several times, and must leave it
as often); ``leave(group, *members)`` (False, OTP's ``not_joined``, when none of them had
joined); ``member_down(member)`` when a local member ends (it leaves every group, as often as it
had joined). Only members hosted on this node are joined here: the node hosting a member owns
its membership. Groups are implicit: a group exists while it has members; ``which_groups()``
lists the non-empty ones. Reads are in-memory dictionary lookups, no network hop:
``members(group)`` (all members this node knows of) and ``local_members(group)`` return tuples,
``()`` for a missing group. Each group's tuple is built once after a change and then shared by
every read, so routing pays one lookup per read, not a copy.

Monitors. ``monitor_scope()`` returns a :class:`Monitor` and a snapshot ``{group: members}``;
from then on the monitor receives an :class:`Event` (``join`` or ``leave``, a group, the members)
for every change of membership, local or remote, in the order the changes happened here, so
snapshot + events = the current view. ``monitor(group)`` does the same for one group.
``demonitor(monitor)`` stops the events and drops those not yet drained.

Driver contract. For each peer node: ``peer_up(node)`` when a link to it comes up,
``receive(node, message)`` for each message of that link in the order the peer sent them (FIFO,
like TCP), ``peer_down(node)`` when it is lost; none of a link's messages before its up or after
its down (the mesh guarantees all this). After each call the driver sends every
``(node, message)`` of ``outgoing()`` to the same scope on that node, and drops those for nodes it
is not linked to. Messages reaching a node where the scope does not run are dropped. Before
dropping a scope, the driver calls ``stop()`` and sends what it queued. ``incarnation`` is an
integer that differs from one start of the scope on a node to the next (``secrets.randbits(63)``
does).

Protocol. Messages are in :mod:`roost.cluster.pg_messages`; each carries the sender's
incarnation.

* On ``peer_up`` a scope sends ``Discover``. A scope receiving ``Discover`` replies with a
  ``Sync`` of *all its local* groups and members; if the sender was not yet a *known peer* it
  becomes one and gets a ``Discover`` back (so both sides learn each other's groups whoever
  started). A ``Sync`` from a linked node that is not yet known makes it known too (it answers our
  discover).
* ``Sync`` *replaces* everything known of that peer: the new view is diffed against the stored
  one and the difference applied, with ``join``/``leave`` events for exactly what changed.
* A local join is sent to every known peer as ``Join(group, members)``; a local leave, or a local
  member's end, as ``Leave(members, groups)``, one message for all the groups the member was in.
* ``Join``/``Leave`` from a node that is not a known peer, or with another incarnation than the
  known one, are ignored.
* ``peer_down``, or ``Goodbye`` (the peer's scope stops), forgets the peer: everything it owned
  leaves at once, with a ``leave`` event per group.
* ``Discover`` has a protocol version; any version is accepted and answered (a newer peer talks
  down to us), and unknown trailing fields are ignored by the decoder.

Guarantees. Strong eventual consistency: no locks and no consensus; each member's membership is
owned by the node hosting it, and other nodes hold replicas of it. Once no message is in flight,
every node's ``members(group)`` is exactly its own members of the group plus those of every node
it is linked to whose scope runs, each as many times as it joined. Membership is not transitive:
a node sees a member only through a direct link to the member's node (with A-B and B-C linked but
not A-C, A does not see C's members). While messages are in flight views lag but do not invent:
a node's view of a peer is the peer's local state as of the last message of it applied (empty
until its first sync). Reads on one node see its local joins and leaves at once.

Races, and how each is handled.

* Concurrent joins seen in different orders: a view is the sum of per-owner multisets, each
  changed only by its owner's messages, in that owner's order (FIFO link); changes of different
  owners commute, so every order gives the same view.
* A leave racing a sync: deltas and syncs of one peer arrive in the order it sent them and a sync
  is a full replacement, so whatever the interleaving the last message applied gives the peer's
  state at that point. A leave for a member not (yet) in the view is a no-op: the sync that
  follows the tracking of a peer is authoritative.
* Deltas and the sync: deltas go to known peers only, and a scope makes a peer known either by
  answering its discover (the sync goes first on the link) or on its sync; so on a link the
  sync precedes the deltas. Deltas from a node not known are dropped, and a delta that reached a
  view before its sync (a forged one) is overwritten by that sync.
* A peer flapping (down, up, down with messages in flight): down forgets all of it, the link's
  lost messages do not matter because up starts again with discover and a full sync.
* A peer's scope restarting while the link stays up: the new scope has a new incarnation. Its
  ``Discover``/``Sync`` replaces the old incarnation (forgetting it first); ``Join``, ``Leave``
  and ``Goodbye`` of an incarnation other than the known one are stale and dropped. A restart
  without ``Goodbye`` is therefore also cleaned up, by the new scope's discover.
* Forged or repeated syncs (OTP's ``forced_sync``): a sync is idempotent, replacing the
  sender's view by the same content changes nothing and emits no event; syncs from a node that
  is not linked are dropped.
* A sync storm (OTP's ``thundering_herd``): a sync costs the size of its content plus the size of
  the view it replaces, never the size of the whole scope, so thousands of them do not starve
  later operations.
* A node where the scope does not run (``overlay_missing``): its link is up but it never answers
  our discover, so it is never known and never sent deltas; it joins when its scope starts and
  sends ``Discover``.

Storage and costs. Each owner's membership is kept once: a multiset per group for the local
members and one per group for each peer (what its last sync and deltas said), plus the number of
owners holding each group (which makes ``which_groups``). A group's ``members`` tuple is built on
the first read after a change, from the owners' multisets (finding them costs at most one lookup
per known peer), and then shared by every read. join, leave and member_down are O(members given
+ known peers) (one message object is shared by all peers); a sync is O(its members + the
peer's previous view); a read is one dictionary lookup once the tuple is built.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, Literal

from roost.cluster.pg_messages import (
    PROTOCOL_VERSION,
    Discover,
    Event,
    G,
    Goodbye,
    Join,
    Leave,
    M,
    Message,
    Sync,
    message_type,
)

__all__ = [
    "PROTOCOL_VERSION",
    "Discover",
    "Event",
    "Goodbye",
    "Join",
    "Leave",
    "Message",
    "Monitor",
    "Scope",
    "Sync",
    "message_type",
]


def _expand(bag: dict[M, int]) -> tuple[M, ...]:
    """The members of a multiset, each as many times as it joined."""
    members = tuple(bag)
    if sum(bag.values()) == len(members):  # the usual case, no member joined twice: C speed
        return members
    return tuple(member for member, count in bag.items() for _ in range(count))


def _expand_all(bags: list[dict[M, int]]) -> tuple[M, ...]:
    if len(bags) == 1:
        return _expand(bags[0])
    return tuple(member for bag in bags for member in _expand(bag))


class Monitor(Generic[G, M]):
    """A subscription to membership changes: a queue of :class:`Event` to drain.

    ``wakeup``, if given, is called (with the monitor) when an event lands in an empty queue, so
    that a driver can wake whoever waits on it; it must not call back into the scope.
    """

    __slots__ = ("_events", "_wakeup", "active", "group", "ref")

    def __init__(
        self, ref: int, group: G | None, wakeup: Callable[[Monitor[G, M]], object] | None
    ) -> None:
        self.ref = ref
        self.group = group  # None: the whole scope
        self.active = True
        self._events: deque[Event[G, M]] = deque()
        self._wakeup = wakeup

    def __len__(self) -> int:
        return len(self._events)

    def drain(self) -> list[Event[G, M]]:
        """The events queued since the last drain, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def _push(self, event: Event[G, M]) -> None:
        self._events.append(event)
        if self._wakeup is not None and len(self._events) == 1:
            self._wakeup(self)

    def __repr__(self) -> str:
        what = "scope" if self.group is None else repr(self.group)
        return f"<Monitor {self.ref} {what} pending={len(self._events)}>"


class _Peer(Generic[G, M]):
    """What we know of a peer's scope: its incarnation and its local groups."""

    __slots__ = ("groups", "incarnation")

    def __init__(self, incarnation: int) -> None:
        self.incarnation = incarnation
        self.groups: dict[G, dict[M, int]] = {}


class Scope(Generic[G, M]):
    """One node's instance of a process-group scope (see the module docstring)."""

    def __init__(self, name: str, node: str, *, incarnation: int) -> None:
        self.name = name
        self.node = node
        self.incarnation = incarnation
        self.stopped = False
        self._linked: set[str] = set()
        self._peers: dict[str, _Peer[G, M]] = {}
        self._local: dict[G, dict[M, int]] = {}
        self._memberships: dict[M, list[G]] = {}  # local member -> its groups, once per join
        self._holders: dict[G, int] = {}  # group -> how many owners (us, peers) have members
        self._members_cache: dict[G, tuple[M, ...]] = {}
        self._local_cache: dict[G, tuple[M, ...]] = {}
        self._out: list[tuple[str, Message[G, M]]] = []
        self._scope_monitors: dict[int, Monitor[G, M]] = {}
        self._group_monitors: dict[G, dict[int, Monitor[G, M]]] = {}
        self._next_ref = 1

    def __repr__(self) -> str:
        return (
            f"<Scope {self.name!r} on {self.node} incarnation={self.incarnation}"
            f" groups={len(self._holders)} peers={len(self._peers)}>"
        )

    # -- reads --------------------------------------------------------------------------------

    def members(self, group: G) -> tuple[M, ...]:
        """Every member of ``group`` this node knows of, local and remote; ``()`` if none."""
        members = self._members_cache.get(group)
        if members is not None:
            return members
        holders = self._holders.get(group)
        if holders is None:
            return ()  # not cached: looking up absent groups must not grow the cache
        bags = []
        local = self._local.get(group)
        if local is not None:
            if holders == 1:  # only local members: share the local tuple
                members = self._members_cache[group] = self.local_members(group)
                return members
            bags.append(local)
        if len(bags) < holders:
            for peer in self._peers.values():
                bag = peer.groups.get(group)
                if bag is not None:
                    bags.append(bag)
                    if len(bags) == holders:
                        break
        members = self._members_cache[group] = _expand_all(bags)
        return members

    def local_members(self, group: G) -> tuple[M, ...]:
        """The members of ``group`` joined on this node; ``()`` if none."""
        members = self._local_cache.get(group)
        if members is not None:
            return members
        bag = self._local.get(group)
        if bag is None:
            return ()
        members = self._local_cache[group] = _expand(bag)
        return members

    def which_groups(self) -> list[G]:
        """The groups with at least one member, local or remote."""
        return list(self._holders)

    def which_local_groups(self) -> list[G]:
        """The groups with at least one local member."""
        return list(self._local)

    def known_peers(self) -> list[str]:
        """The nodes whose scope we exchange membership with."""
        return list(self._peers)

    def owners(self, group: G) -> dict[str, int]:
        """How many members of ``group`` each node holds (this one included); ``{}`` if none.

        For introspection (``roost ctl groups``): O(known peers), builds no member tuple.
        """
        counts: dict[str, int] = {}
        local = self._local.get(group)
        if local is not None:
            counts[self.node] = sum(local.values())
        for node, peer in self._peers.items():
            bag = peer.groups.get(group)
            if bag is not None:
                counts[node] = sum(bag.values())
        return counts

    def statistics(self) -> dict[str, object]:
        """A snapshot of the scope's size: groups and members, local and by peer.

        O(groups + members): for introspection, not for the message path.
        """
        return {
            "scope": self.name,
            "groups": len(self._holders),
            "local_groups": len(self._local),
            "local_members": sum(sum(bag.values()) for bag in self._local.values()),
            "peers": {
                node: sum(sum(bag.values()) for bag in peer.groups.values())
                for node, peer in sorted(self._peers.items())
            },
            "monitors": len(self._scope_monitors)
            + sum(len(m) for m in self._group_monitors.values()),
        }

    def outgoing(self) -> list[tuple[str, Message[G, M]]]:
        """The messages to send, ``(node, message)``, oldest first; clears the queue."""
        out = self._out
        self._out = []
        return out

    # -- local operations ---------------------------------------------------------------------

    def join(self, group: G, *members: M) -> None:
        """Local ``members`` join ``group`` (each once per time it is listed)."""
        if not members:
            return
        self._check_running()
        local = self._local.get(group)
        if local is None:
            local = self._local[group] = {}
            self._hold(group)
        memberships = self._memberships
        for member in members:
            local[member] = local.get(member, 0) + 1
            groups = memberships.get(member)
            if groups is None:
                memberships[member] = [group]
            else:
                groups.append(group)
        self._local_cache.pop(group, None)
        self._changed("join", group, members)
        if self._peers:
            self._broadcast(Join(self.incarnation, group, members))

    def leave(self, group: G, *members: M) -> bool:
        """Local ``members`` leave ``group`` once each; False if none of them had joined it."""
        self._check_running()
        local = self._local.get(group)
        if local is None:
            return False
        left: list[M] = []
        memberships = self._memberships
        for member in members:
            count = local.get(member)
            if count is None:
                continue
            if count == 1:
                del local[member]
            else:
                local[member] = count - 1
            groups = memberships[member]
            if len(groups) == 1:
                del memberships[member]
            else:
                groups.remove(group)
            left.append(member)
        if not left:
            return False
        if not local:
            del self._local[group]
            self._release(group)
        self._local_cache.pop(group, None)
        gone = tuple(left)
        self._changed("leave", group, gone)
        if self._peers:
            self._broadcast(Leave(self.incarnation, gone, (group,)))
        return True

    def member_down(self, member: M) -> bool:
        """A local member ended: it leaves all its groups. False if it was in none."""
        self._check_running()
        groups = self._memberships.pop(member, None)
        if groups is None:
            return False
        for group in dict.fromkeys(groups):  # each group once, in the order joined
            local = self._local[group]
            count = local.pop(member)
            if not local:
                del self._local[group]
                self._release(group)
            self._local_cache.pop(group, None)
            self._changed("leave", group, (member,) * count)
        if self._peers:
            self._broadcast(Leave(self.incarnation, (member,), tuple(groups)))
        return True

    def stop(self) -> None:
        """Stop the scope: say goodbye to every linked node and forget everything.

        The driver sends what ``outgoing()`` then returns and drops the scope. No events are
        emitted: the monitors end with the scope.
        """
        if self.stopped:
            return
        goodbye = Goodbye(self.incarnation)
        self._out.extend((node, goodbye) for node in sorted(self._linked))
        self.stopped = True
        for monitor in [*self._scope_monitors.values()]:
            self.demonitor(monitor)
        for monitors in [*self._group_monitors.values()]:
            for monitor in [*monitors.values()]:
                self.demonitor(monitor)
        self._linked.clear()
        self._peers.clear()
        self._local.clear()
        self._memberships.clear()
        self._holders.clear()
        self._members_cache.clear()
        self._local_cache.clear()

    # -- monitors -----------------------------------------------------------------------------

    def monitor_scope(
        self, wakeup: Callable[[Monitor[G, M]], object] | None = None
    ) -> tuple[Monitor[G, M], dict[G, tuple[M, ...]]]:
        """Subscribe to every change; returns the monitor and the current ``{group: members}``."""
        self._check_running()
        monitor: Monitor[G, M] = Monitor(self._take_ref(), None, wakeup)
        self._scope_monitors[monitor.ref] = monitor
        return monitor, {group: self.members(group) for group in self._holders}

    def monitor(
        self, group: G, wakeup: Callable[[Monitor[G, M]], object] | None = None
    ) -> tuple[Monitor[G, M], tuple[M, ...]]:
        """Subscribe to the changes of ``group``; returns the monitor and its current members."""
        self._check_running()
        monitor: Monitor[G, M] = Monitor(self._take_ref(), group, wakeup)
        self._group_monitors.setdefault(group, {})[monitor.ref] = monitor
        return monitor, self.members(group)

    def demonitor(self, monitor: Monitor[G, M]) -> bool:
        """End a subscription and drop its undrained events; False if it had already ended."""
        if not monitor.active:
            return False
        monitor.active = False
        monitor._events.clear()
        if monitor.group is None:
            self._scope_monitors.pop(monitor.ref, None)
        else:
            monitors = self._group_monitors.get(monitor.group)
            if monitors is not None:
                monitors.pop(monitor.ref, None)
                if not monitors:
                    del self._group_monitors[monitor.group]
        return True

    # -- network events -----------------------------------------------------------------------

    def peer_up(self, node: str) -> None:
        """A link to ``node`` came up: discover its scope."""
        if self.stopped or node == self.node:
            return
        if node in self._linked:  # up twice: the old link is gone, whatever the driver missed
            self.peer_down(node)
        self._linked.add(node)
        self._out.append((node, Discover(self.incarnation)))

    def peer_down(self, node: str) -> None:
        """The link to ``node`` is lost: everything its scope owned leaves."""
        self._linked.discard(node)
        self._forget(node)

    def receive(self, node: str, message: Message[G, M]) -> None:
        """Handle a message from the scope on ``node``."""
        if node not in self._linked:
            return  # a stray sender, or a link already reported down
        peer = self._peers.get(node)
        if isinstance(message, Discover | Sync):
            if peer is not None and peer.incarnation != message.incarnation:
                self._forget(node)  # the peer's scope restarted: its old incarnation is gone
                peer = None
            if isinstance(message, Sync):
                if peer is None:  # it answers our discover
                    peer = self._peers[node] = _Peer(message.incarnation)
                self._sync(peer, message.groups)
                return
            self._out.append((node, Sync(self.incarnation, self._local_groups())))
            if peer is None:
                self._peers[node] = _Peer(message.incarnation)
                self._out.append((node, Discover(self.incarnation)))
            return
        if peer is None or peer.incarnation != message.incarnation:
            return  # from a node we do not know yet, or from an old incarnation: stale
        if isinstance(message, Join):
            self._remote_join(peer, message.group, message.members)
        elif isinstance(message, Leave):
            self._remote_leave(peer, message.members, message.groups)
        else:
            self._forget(node)  # Goodbye

    # -- internals ----------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self.stopped:
            raise RuntimeError(f"scope {self.name!r} on {self.node} is stopped")

    def _take_ref(self) -> int:
        ref = self._next_ref
        self._next_ref += 1
        return ref

    def _broadcast(self, message: Message[G, M]) -> None:
        self._out.extend((node, message) for node in self._peers)

    def _local_groups(self) -> tuple[tuple[G, tuple[M, ...]], ...]:
        local_members = self.local_members
        return tuple((group, local_members(group)) for group in self._local)

    def _hold(self, group: G) -> None:
        """An owner's multiset for ``group`` appeared."""
        self._holders[group] = self._holders.get(group, 0) + 1

    def _release(self, group: G) -> None:
        """An owner's multiset for ``group`` emptied: the group vanishes with the last."""
        holders = self._holders[group] - 1
        if holders:
            self._holders[group] = holders
        else:
            del self._holders[group]

    def _changed(self, kind: Literal["join", "leave"], group: G, members: tuple[M, ...]) -> None:
        """An owner's multiset for ``group`` changed by ``members``."""
        self._members_cache.pop(group, None)
        if self._scope_monitors or self._group_monitors:
            self._notify(kind, group, members)

    def _notify(self, kind: Literal["join", "leave"], group: G, members: tuple[M, ...]) -> None:
        event = Event(kind, group, members)
        for monitor in self._scope_monitors.values():
            monitor._push(event)
        monitors = self._group_monitors.get(group)
        if monitors:
            for monitor in monitors.values():
                monitor._push(event)

    def _remote_join(self, peer: _Peer[G, M], group: G, members: tuple[M, ...]) -> None:
        if not members:
            return
        bag = peer.groups.get(group)
        if bag is None:
            bag = peer.groups[group] = {}
            self._hold(group)
        for member in members:
            bag[member] = bag.get(member, 0) + 1
        self._changed("join", group, members)

    def _remote_leave(
        self, peer: _Peer[G, M], members: tuple[M, ...], groups: tuple[G, ...]
    ) -> None:
        times: dict[G, int] = {}
        for group in groups:
            times[group] = times.get(group, 0) + 1
        for group, n in times.items():
            bag = peer.groups.get(group)
            if bag is None:
                continue  # not in our view of the peer (yet): its next sync says the truth
            left: list[M] = []
            for member in members:
                count = bag.get(member, 0)
                taken = min(count, n)
                if not taken:
                    continue
                if taken == count:
                    del bag[member]
                else:
                    bag[member] = count - taken
                left.extend((member,) * taken)
            if not bag:
                del peer.groups[group]
                self._release(group)
            if left:
                self._changed("leave", group, tuple(left))

    def _sync(self, peer: _Peer[G, M], content: tuple[tuple[G, tuple[M, ...]], ...]) -> None:
        """Replace the view of ``peer`` by ``content``, applying only the difference."""
        new: dict[G, dict[M, int]] = {}
        for group, members in content:
            if not members:
                continue  # empty groups do not exist
            bag = new.get(group)
            if bag is None:
                bag = new[group] = {}
            for member in members:
                bag[member] = bag.get(member, 0) + 1
        old = peer.groups
        peer.groups = new
        for group, old_bag in old.items():
            new_bag = new.get(group)
            if new_bag is None:
                self._release(group)
                self._changed("leave", group, _expand(old_bag))
            elif new_bag != old_bag:
                left, joined = _difference(old_bag, new_bag)
                if left:
                    self._changed("leave", group, left)
                if joined:
                    self._changed("join", group, joined)
        for group, new_bag in new.items():
            if group not in old:
                self._hold(group)
                self._changed("join", group, _expand(new_bag))

    def _forget(self, node: str) -> None:
        """Everything ``node``'s scope owned leaves; it is no longer a known peer."""
        peer = self._peers.pop(node, None)
        if peer is None:
            return
        for group, bag in peer.groups.items():
            self._release(group)
            self._changed("leave", group, _expand(bag))


def _difference(old: dict[M, int], new: dict[M, int]) -> tuple[tuple[M, ...], tuple[M, ...]]:
    """What left (in ``old``, not in ``new``) and what joined, counting repeats."""
    left: list[M] = []
    joined: list[M] = []
    for member, count in old.items():
        extra = count - new.get(member, 0)
        if extra > 0:
            left.extend((member,) * extra)
    for member, count in new.items():
        extra = count - old.get(member, 0)
        if extra > 0:
            joined.extend((member,) * extra)
    return tuple(left), tuple(joined)
