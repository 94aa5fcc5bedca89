"""A model of process groups under every interleaving hypothesis finds: nodes start, stop,
crash and restart, links are cut and restored, members join, leave and die, and messages are
delivered a few at a time. Whenever the network settles, every node sees exactly the members of
the nodes it is linked to, plus its own; at every step, its monitor agrees with its reads."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from roost.cluster.pg_sim import Network

NODES = ("n1", "n2", "n3", "n4")
GROUPS = ("g1", "g2", "g3")
MEMBER_IDS = st.integers(min_value=0, max_value=3)

nodes = st.sampled_from(NODES)
groups = st.sampled_from(GROUPS)
pairs = st.tuples(nodes, nodes).filter(lambda pair: pair[0] != pair[1])


class ProcessGroups(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = Network()
        # what each running node's members joined locally, kept apart from the scopes
        self.local: dict[str, dict[str, Counter[Any]]] = {}

    @initialize()
    def start_all_linked(self) -> None:
        self.net.add(*NODES)
        self.net.link_all()
        self.local = {name: {} for name in NODES}

    def _running(self, name: str) -> bool:
        return self.net.running(name)

    # -- nodes and links ----------------------------------------------------------------------

    @rule(name=nodes)
    def start(self, name: str) -> None:
        if not self._running(name):
            self.net.start(name)
            self.local[name] = {}

    @rule(name=nodes)
    def stop(self, name: str) -> None:
        self.net.stop(name)
        self.local.pop(name, None)

    @rule(name=nodes)
    def crash(self, name: str) -> None:
        self.net.crash(name)
        self.local.pop(name, None)

    @rule(name=nodes, goodbye=st.booleans())
    def restart(self, name: str, goodbye: bool) -> None:
        if self._running(name):
            self.net.restart(name, goodbye=goodbye)
            self.local[name] = {}

    @rule(pair=pairs)
    def link(self, pair: tuple[str, str]) -> None:
        self.net.link(*pair)

    @rule(pair=pairs)
    def cut(self, pair: tuple[str, str]) -> None:
        self.net.unlink(*pair)

    # -- membership ---------------------------------------------------------------------------

    @rule(name=nodes, group=groups, ids=st.lists(MEMBER_IDS, min_size=1, max_size=3))
    def join(self, name: str, group: str, ids: list[int]) -> None:
        if not self._running(name):
            return
        members = [(name, i) for i in ids]
        self.net.scope(name).join(group, *members)
        self.local[name].setdefault(group, Counter()).update(members)

    @rule(name=nodes, group=groups, ids=st.lists(MEMBER_IDS, min_size=1, max_size=3))
    def leave(self, name: str, group: str, ids: list[int]) -> None:
        if not self._running(name):
            return
        members = [(name, i) for i in ids]
        joined = self.local[name].get(group, Counter())
        expected = any(joined[member] for member in members)
        assert self.net.scope(name).leave(group, *members) == expected
        for member in members:
            if joined[member]:
                joined[member] -= 1
        joined += Counter()  # drop zeros

    @rule(name=nodes, i=MEMBER_IDS)
    def member_dies(self, name: str, i: int) -> None:
        if not self._running(name):
            return
        member = (name, i)
        was_member = any(counts[member] for counts in self.local[name].values())
        assert self.net.scope(name).member_down(member) == was_member
        for counts in self.local[name].values():
            del counts[member]

    # -- the network --------------------------------------------------------------------------

    @precondition(lambda self: bool(self.net.pending()))
    @rule(which=st.integers(min_value=0), count=st.integers(min_value=1, max_value=4))
    def deliver(self, which: int, count: int) -> None:
        pending = self.net.pending()
        self.net.deliver(*pending[which % len(pending)], count=count)

    @rule()
    def settle(self) -> None:
        self.net.settle()
        assert self.net.view_errors() == []

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def local_members_are_what_was_joined_here(self) -> None:
        for name, joined in self.local.items():
            scope = self.net.scope(name)
            actual = {g: Counter(scope.local_members(g)) for g in scope.which_local_groups()}
            assert actual == {g: +c for g, c in joined.items() if +c}

    @invariant()
    def monitors_agree_with_reads(self) -> None:
        assert self.net.monitor_errors() == []

    def teardown(self) -> None:
        self.net.settle()
        assert self.net.view_errors() == []
        # heal everything: every running node then sees every running node's members
        self.net.link_all()
        self.net.settle()
        assert self.net.view_errors() == []
        assert self.net.monitor_errors() == []


ProcessGroups.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)
test_process_groups = ProcessGroups.TestCase
