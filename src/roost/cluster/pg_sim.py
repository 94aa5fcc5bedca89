"""A simulated network for process groups: nodes, links and message delivery under test control.

:class:`Network` drives one :class:`~roost.cluster.pg.Scope` per node the way the mesh does,
but in memory and one message at a time, so that tests choose the interleaving:

* Nodes are processes; a node's scope runs or not (``start``, ``stop`` with goodbyes,
  ``restart``). ``crash`` is the process dying: its links are cut and its scope is gone without
  a goodbye.
* Links join pairs of nodes. Each direction is a FIFO queue, like a TCP connection. ``link``
  tells both scopes ``peer_up``; ``unlink`` drops the messages in flight both ways and tells both
  ``peer_down`` (deliver some first to model messages that made it before the cut). The mesh's
  contract holds: a message only travels on the link that was up when it was sent.
* ``deliver(src, dst)`` hands the oldest message of one direction to its scope;
  ``inject`` adds a forged message; ``settle`` delivers until nothing is in flight, in a fixed
  or a random order.

Scopes' outgoing messages are collected ("pumped") before every network step and topology
change, so a test may call a scope's ``join``/``leave`` directly. Every running scope has a
scope monitor whose events are replayed onto its snapshot: :meth:`Network.monitor_errors`
checks that replay against the scope's reads (true at every moment), and
:meth:`Network.view_errors` checks the convergence guarantee (true once settled).
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Hashable, Iterable
from typing import Any

from roost.cluster.pg import Message, Monitor, Scope

Group = Hashable
Member = Hashable


class SimNode:
    """A node: maybe a running scope, its monitor and the view replayed from the events."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scope: Scope[Any, Any] | None = None
        self.monitor: Monitor[Any, Any] | None = None
        self.replay: dict[Group, Counter[Member]] = {}
        self.starts = 0


class Network:
    def __init__(self, scope: str = "default") -> None:
        self.scope_name = scope
        self.nodes: dict[str, SimNode] = {}
        self._links: set[frozenset[str]] = set()
        self._queues: dict[tuple[str, str], deque[Message[Any, Any]]] = {}
        self._incarnations = 0
        self.delivered = 0

    # -- nodes --------------------------------------------------------------------------------

    def add(self, *names: str, start: bool = True) -> None:
        for name in names:
            if name in self.nodes:
                raise ValueError(f"node {name} exists")
            self.nodes[name] = SimNode(name)
            if start:
                self.start(name)

    def scope(self, name: str) -> Scope[Any, Any]:
        scope = self.nodes[name].scope
        if scope is None:
            raise LookupError(f"the scope does not run on {name}")
        return scope

    def running(self, name: str) -> bool:
        return self.nodes[name].scope is not None

    def start(self, name: str) -> Scope[Any, Any]:
        """Start the scope on ``name`` with a new incarnation; it discovers its linked peers."""
        node = self.nodes[name]
        if node.scope is not None:
            raise ValueError(f"the scope already runs on {name}")
        self._incarnations += 1
        scope: Scope[Any, Any] = Scope(self.scope_name, name, incarnation=self._incarnations)
        node.scope = scope
        node.starts += 1
        node.monitor, snapshot = scope.monitor_scope()
        node.replay = {group: Counter(members) for group, members in snapshot.items()}
        for peer in sorted(self.neighbours(name)):
            scope.peer_up(peer)
        self.pump()
        return scope

    def stop(self, name: str, *, goodbye: bool = True) -> None:
        """Stop the scope on ``name``; without ``goodbye`` its last messages are lost."""
        self.pump()
        node = self.nodes[name]
        if node.scope is None:
            return
        node.scope.stop()
        if goodbye:
            self.pump()
        else:
            node.scope.outgoing()
        node.scope = node.monitor = None
        node.replay = {}

    def restart(self, name: str, *, goodbye: bool = True) -> Scope[Any, Any]:
        self.stop(name, goodbye=goodbye)
        return self.start(name)

    def crash(self, name: str) -> None:
        """The node's process dies: its links drop and its scope is gone, without a goodbye."""
        for peer in sorted(self.neighbours(name)):
            self.unlink(name, peer)
        self.stop(name, goodbye=False)

    # -- links --------------------------------------------------------------------------------

    def neighbours(self, name: str) -> set[str]:
        return {peer for pair in self._links if name in pair for peer in pair if peer != name}

    def linked(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self._links

    def link(self, a: str, b: str) -> None:
        if a == b or self.linked(a, b):
            return
        self.pump()
        self._links.add(frozenset((a, b)))
        self._queues[a, b] = deque()
        self._queues[b, a] = deque()
        for here, there in ((a, b), (b, a)):
            scope = self.nodes[here].scope
            if scope is not None:
                scope.peer_up(there)
        self.pump()

    def unlink(self, a: str, b: str) -> None:
        """Cut the link: what is in flight either way is lost, both ends see it down."""
        if not self.linked(a, b):
            return
        self.pump()
        self._links.discard(frozenset((a, b)))
        del self._queues[a, b], self._queues[b, a]
        for here, there in ((a, b), (b, a)):
            scope = self.nodes[here].scope
            if scope is not None:
                scope.peer_down(there)
        self.pump()

    def link_all(self, names: Iterable[str] | None = None) -> None:
        group = sorted(self.nodes if names is None else names)
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                self.link(a, b)

    def split(self, *partitions: Iterable[str]) -> None:
        """Cut every link between nodes of different partitions; link each partition fully."""
        sides = {name: i for i, part in enumerate(partitions) for name in part}
        for pair in sorted(self._links, key=sorted):
            a, b = sorted(pair)
            if sides.get(a) != sides.get(b):
                self.unlink(a, b)
        for part in partitions:
            self.link_all(part)

    # -- messages -----------------------------------------------------------------------------

    def pump(self) -> None:
        """Move every scope's outgoing messages onto the links (dropped where none is up)."""
        for name, node in self.nodes.items():
            if node.scope is None:
                continue
            for destination, message in node.scope.outgoing():
                queue = self._queues.get((name, destination))
                if queue is not None:
                    queue.append(message)
            if node.monitor is not None:
                for event in node.monitor.drain():
                    counts = node.replay.setdefault(event.group, Counter())
                    if event.kind == "join":
                        counts.update(event.members)
                    else:
                        for member in event.members:
                            counts[member] -= 1  # a negative count shows a wrong event
                            if not counts[member]:
                                del counts[member]
                        if not counts:
                            del node.replay[event.group]

    def in_flight(self, src: str, dst: str) -> list[Message[Any, Any]]:
        self.pump()
        return list(self._queues.get((src, dst), ()))

    def pending(self) -> list[tuple[str, str]]:
        """The link directions with messages in flight, sorted."""
        self.pump()
        return sorted(key for key, queue in self._queues.items() if queue)

    def inject(self, src: str, dst: str, message: Message[Any, Any]) -> None:
        """Put a (forged) message in flight from ``src`` to ``dst``, after those already there."""
        self.pump()
        queue = self._queues.get((src, dst))
        if queue is None:
            raise LookupError(f"{src} and {dst} are not linked")
        queue.append(message)

    def deliver(self, src: str, dst: str, count: int = 1) -> int:
        """Deliver up to ``count`` messages from ``src`` to ``dst``; returns how many."""
        self.pump()
        queue = self._queues.get((src, dst))
        done = 0
        while queue and done < count:
            message = queue.popleft()
            done += 1
            scope = self.nodes[dst].scope
            if scope is not None:  # no scope there: the message is dropped, as by the mesh
                scope.receive(src, message)
            self.pump()
        self.delivered += done
        return done

    def settle(self, rng: random.Random | None = None, limit: int = 1_000_000) -> int:
        """Deliver until nothing is in flight: round robin, or random links with ``rng``."""
        done = 0
        while pending := self.pending():
            for src, dst in [rng.choice(pending)] if rng is not None else pending:
                done += self.deliver(src, dst)
            if done > limit:
                raise RuntimeError(f"the network did not settle within {limit} messages")
        return done

    # -- checks -------------------------------------------------------------------------------

    def expected(self, name: str) -> dict[Group, Counter[Member]]:
        """What ``name`` must see once settled: its members and its running neighbours'."""
        view: dict[Group, Counter[Member]] = {}
        for owner in sorted({name} | self.neighbours(name)):
            scope = self.nodes[owner].scope
            if scope is None:
                continue
            for group in scope.which_local_groups():
                view.setdefault(group, Counter()).update(scope.local_members(group))
        return view

    def view(self, name: str) -> dict[Group, Counter[Member]]:
        scope = self.scope(name)
        return {group: Counter(scope.members(group)) for group in scope.which_groups()}

    def view_errors(self) -> list[str]:
        """How the running scopes' views differ from the guarantee (meaningful once settled)."""
        errors = []
        for name, node in sorted(self.nodes.items()):
            if node.scope is None:
                continue
            expected, actual = self.expected(name), self.view(name)
            if expected != actual:
                errors.append(f"{name} sees {actual}, expected {expected}")
            peers = set(node.scope.known_peers())
            running = {peer for peer in self.neighbours(name) if self.running(peer)}
            if peers != running:
                errors.append(f"{name} knows peers {sorted(peers)}, expected {sorted(running)}")
        return errors

    def monitor_errors(self) -> list[str]:
        """Where snapshot + events of a scope's monitor differ from its reads (always wrong)."""
        self.pump()
        errors = []
        for name, node in sorted(self.nodes.items()):
            if node.scope is not None and node.replay != self.view(name):
                errors.append(f"{name}: monitor replay {node.replay} != view {self.view(name)}")
        return errors
