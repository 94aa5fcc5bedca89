"""Process groups across several nodes, on the simulated network: the failure cases OTP's pg
suite names (netsplit, trisplit, foursplit, exchange, scope_restart, forced_sync, double,
group_leave, overlay_missing, thundering_herd, ...) and the races of the protocol."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from roost.cluster.pg import Discover, Event, Join, Leave, Scope, Sync
from roost.cluster.pg_sim import Network


def network(*names: str, linked: bool = True) -> Network:
    net = Network()
    net.add(*names)
    if linked:
        net.link_all()
        net.settle()
    return net


def converged(net: Network) -> None:
    """Settle, then check the convergence guarantee and the monitors' replay everywhere."""
    net.settle()
    assert net.view_errors() == []
    assert net.monitor_errors() == []


def sees(net: Network, node: str, group: str) -> list[Any]:
    return sorted(net.scope(node).members(group))


# -- the OTP suite's cases ----------------------------------------------------------------------


def test_disconnected_start_links_later_and_exchanges_groups() -> None:
    net = network("a", "b", linked=False)
    net.scope("a").join("g", "a1")
    net.scope("b").join("g", "b1")
    net.link("a", "b")
    converged(net)
    assert sees(net, "a", "g") == sees(net, "b", "g") == ["a1", "b1"]


def test_netsplit_removes_remote_members_and_healing_brings_them_back() -> None:
    net = network("a", "b")
    net.scope("b").join("g", "b1")
    converged(net)
    assert sees(net, "a", "g") == ["b1"]
    net.unlink("a", "b")
    assert sees(net, "a", "g") == []
    net.scope("b").join("g", "b2")  # joined during the split
    net.link("a", "b")
    converged(net)
    assert sees(net, "a", "g") == ["b1", "b2"]


def test_trisplit_each_side_sees_exactly_its_own_partition() -> None:
    net = network("a", "b", "c")
    for name in "abc":
        net.scope(name).join("g", f"{name}1")
    converged(net)
    net.split(["a", "b"], ["c"])
    converged(net)
    assert sees(net, "a", "g") == sees(net, "b", "g") == ["a1", "b1"]
    assert sees(net, "c", "g") == ["c1"]
    net.split(["a"], ["b"], ["c"])
    net.scope("b").leave("g", "b1")
    net.scope("c").join("g", "c2")
    converged(net)
    assert [sees(net, name, "g") for name in "abc"] == [["a1"], [], ["c1", "c2"]]
    net.link_all()
    converged(net)
    for name in "abc":
        assert sees(net, name, "g") == ["a1", "c1", "c2"]


def test_foursplit_two_pairs_change_apart_and_merge() -> None:
    net = network("a", "b", "c", "d")
    for name in "abcd":
        net.scope(name).join("g", name)
    converged(net)
    net.split(["a", "b"], ["c", "d"])
    net.scope("a").leave("g", "a")
    net.scope("c").join("g", "c-again")
    net.scope("d").member_down("d")
    converged(net)
    assert sees(net, "b", "g") == ["b"]
    assert sees(net, "d", "g") == ["c", "c-again"]
    net.link_all()
    converged(net)
    for name in "abcd":
        assert sees(net, name, "g") == ["b", "c", "c-again"]


def test_exchange_two_partitions_with_members_heal() -> None:
    net = network("a", "b", "c", "d", linked=False)
    net.link("a", "b")
    net.link("c", "d")
    for name in "abcd":
        net.scope(name).join("left" if name in "ab" else "right", name)
        net.scope(name).join("both", name)
    converged(net)
    assert sees(net, "a", "right") == []
    net.link_all()
    converged(net)
    for name in "abcd":
        assert sees(net, name, "left") == ["a", "b"]
        assert sees(net, name, "right") == ["c", "d"]
        assert sees(net, name, "both") == ["a", "b", "c", "d"]


def test_scope_restart_drops_the_old_members_and_learns_the_new_ones() -> None:
    net = network("a", "b")
    net.scope("b").join("g", "old")
    converged(net)
    monitor, _ = net.scope("a").monitor("g")
    net.restart("b")
    net.scope("b").join("g", "new")
    converged(net)
    assert sees(net, "a", "g") == ["new"]
    assert monitor.drain() == [Event("leave", "g", ("old",)), Event("join", "g", ("new",))]


def test_scope_restart_without_goodbye_is_detected_by_the_new_incarnation() -> None:
    net = network("a", "b")
    net.scope("b").join("g", "old")
    converged(net)
    net.restart("b", goodbye=False)
    net.scope("b").join("g", "new")
    converged(net)
    assert sees(net, "a", "g") == ["new"]


def test_a_stale_message_of_an_old_incarnation_is_dropped() -> None:
    net = network("a", "b")
    old = net.scope("b").incarnation
    net.restart("b")
    converged(net)
    net.inject("b", "a", Join(old, "g", ("ghost",)))
    net.inject("b", "a", Discover(old))
    converged(net)
    assert sees(net, "a", "g") == []


def test_forced_sync_identical_to_the_truth_changes_nothing() -> None:
    net = network("a", "b")
    net.scope("a").join("one", "a1")
    net.scope("b").join("one", "b1")
    converged(net)
    b = net.scope("b")
    monitor, _ = net.scope("a").monitor_scope()
    net.inject("b", "a", Sync(b.incarnation, (("one", ("b1",)),)))
    net.settle()
    assert sees(net, "a", "one") == ["a1", "b1"]
    assert monitor.drain() == []


def test_forced_sync_replaces_what_the_peer_owned() -> None:
    net = network("a", "b")
    net.scope("a").join("one", "a1")
    net.scope("b").join("one", "b1")
    converged(net)
    b = net.scope("b")
    net.inject("b", "a", Sync(b.incarnation, (("two", ("b1",)),)))
    net.settle()
    assert sees(net, "a", "one") == ["a1"]
    assert sees(net, "a", "two") == ["b1"]
    assert net.monitor_errors() == []
    # the truth returns with the next sync: b's scope answers a discover
    net.inject("a", "b", Discover(net.scope("a").incarnation))
    converged(net)
    assert sees(net, "a", "one") == ["a1", "b1"]


def test_double_join_is_seen_twice_remotely_and_must_leave_twice() -> None:
    net = network("a", "b")
    net.scope("b").join("g", "m")
    net.scope("b").join("g", "m")
    converged(net)
    assert sees(net, "a", "g") == ["m", "m"]
    net.scope("b").leave("g", "m")
    converged(net)
    assert sees(net, "a", "g") == ["m"]
    net.scope("b").leave("g", "m")
    converged(net)
    assert net.scope("a").which_groups() == []


def test_group_leave_of_one_group_keeps_the_others() -> None:
    net = network("a", "b")
    b = net.scope("b")
    b.join("g1", "m")
    b.join("g2", "m")
    b.join("g2", "m")
    converged(net)
    assert b.leave("g1", "m")
    assert not b.leave("g1", "m")
    converged(net)
    assert net.scope("a").which_groups() == ["g2"]
    b.member_down("m")
    converged(net)
    assert net.scope("a").which_groups() == []


def test_a_remote_leave_makes_the_group_vanish() -> None:
    net = network("a", "b")
    net.scope("b").join("g", "m")
    converged(net)
    net.scope("b").leave("g", "m")
    converged(net)
    assert net.scope("a").which_groups() == []
    assert net.scope("a").members("g") == ()


def test_overlay_missing_a_linked_node_without_the_scope_changes_nothing() -> None:
    net = Network()
    net.add("a", "b")
    net.add("bare", start=False)
    net.link_all()
    net.scope("a").join("g", "a1")
    converged(net)
    assert sorted(net.scope("a").known_peers()) == ["b"]
    assert sees(net, "a", "g") == sees(net, "b", "g") == ["a1"]
    net.scope("a").join("g", "a2")
    assert net.in_flight("a", "bare") == []  # nothing is sent to a node that never answered
    net.start("bare").join("g", "late")
    converged(net)
    assert sees(net, "a", "g") == ["a1", "a2", "late"]
    assert sees(net, "bare", "g") == ["a1", "a2", "late"]


def test_membership_is_not_transitive() -> None:
    net = network("a", "b", "c", linked=False)
    net.link("a", "b")
    net.link("b", "c")
    for name in "abc":
        net.scope(name).join("g", name)
    converged(net)
    assert sees(net, "a", "g") == ["a", "b"]
    assert sees(net, "b", "g") == ["a", "b", "c"]
    assert sees(net, "c", "g") == ["b", "c"]


def test_a_crashed_node_disappears_and_comes_back_empty() -> None:
    net = network("a", "b", "c")
    net.scope("c").join("g", "c1")
    converged(net)
    net.crash("c")
    assert sees(net, "a", "g") == sees(net, "b", "g") == []
    net.start("c").join("g", "c2")
    net.link_all()
    converged(net)
    assert sees(net, "a", "g") == ["c2"]


def test_thundering_herd_of_forged_syncs_then_one_more_join_completes() -> None:
    scope: Scope[str, Any] = Scope("default", "a", incarnation=1)
    groups = [f"g{i}" for i in range(10_000)]
    for group in groups:
        scope.join(group, ("local", group))
    herd = [f"n{i}" for i in range(2_000)]
    for i, node in enumerate(herd):
        scope.peer_up(node)
        content = tuple((groups[(i * 5 + k) % len(groups)], ((node, k),)) for k in range(5))
        scope.receive(node, Sync(1000 + i, content))
    scope.outgoing()
    assert len(scope.known_peers()) == 2_000
    assert len(scope.members("g0")) == 2  # its local member and (n0, 0)
    scope.join("latecomer", "m")
    assert scope.members("latecomer") == ("m",)
    out = scope.outgoing()
    assert len(out) == 2_000
    assert {node for node, _ in out} == set(herd)
    assert {message for _, message in out} == {Join(1, "latecomer", ("m",))}


# -- races --------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["a", "b"])
def test_concurrent_joins_seen_in_either_order_give_the_same_view(first: str) -> None:
    net = network("a", "b", "c")
    net.scope("a").join("g", "a1")
    net.scope("b").join("g", "b1")
    net.scope("a").leave("g", "a1")
    second = "b" if first == "a" else "a"
    net.deliver(first, "c", 10)
    net.deliver(second, "c", 10)
    converged(net)
    assert sees(net, "c", "g") == ["b1"]


def test_a_leave_racing_the_sync_that_carried_the_member() -> None:
    net = network("a", "b", linked=False)
    net.scope("b").join("g", "m")
    net.link("a", "b")
    net.deliver("a", "b")  # b answers a's discover: a sync with m, then a discover
    net.scope("b").leave("g", "m")  # b now knows a: the leave follows the sync on the link
    assert [type(m).__name__ for m in net.in_flight("b", "a")][-1] == "Leave"
    converged(net)
    assert sees(net, "a", "g") == []


def test_a_leave_before_the_peer_is_known_is_covered_by_the_sync() -> None:
    net = network("a", "b", linked=False)
    net.scope("b").join("g", "m")
    net.link("a", "b")
    net.scope("b").leave("g", "m")  # b does not know a yet: nothing to send, the sync says it
    assert not any(isinstance(m, Leave) for m in net.in_flight("b", "a"))
    converged(net)
    assert sees(net, "a", "g") == []


def test_the_sync_comes_before_any_delta_on_a_link() -> None:
    net = network("a", "b", linked=False)
    net.scope("b").join("g", "m1")
    net.link("a", "b")
    net.scope("b").join("g", "m2")  # b does not know a yet
    net.deliver("a", "b")
    net.scope("b").join("g", "m3")  # now it does
    kinds = [type(message).__name__ for message in net.in_flight("b", "a")]
    assert kinds == ["Discover", "Sync", "Discover", "Join"]
    converged(net)
    assert sees(net, "a", "g") == ["m1", "m2", "m3"]


def test_a_delta_applied_before_the_sync_is_overwritten_by_it() -> None:
    net = network("a", "b", linked=False)
    net.link("a", "b")
    net.deliver("b", "a")  # b's discover: a knows b, with an empty view until b's sync
    net.inject("b", "a", Join(net.scope("b").incarnation, "g", ("phantom",)))
    net.deliver("b", "a")
    assert sees(net, "a", "g") == ["phantom"]
    converged(net)
    assert sees(net, "a", "g") == []


def test_a_flapping_link_with_messages_in_flight_converges() -> None:
    rng = random.Random(2024)
    net = network("a", "b", "c")
    members = {name: [f"{name}{i}" for i in range(6)] for name in "abc"}
    for round_ in range(60):
        name = rng.choice("abc")
        member = rng.choice(members[name])
        if rng.random() < 0.6:
            net.scope(name).join(rng.choice(["g", "h"]), member)
        else:
            net.scope(name).member_down(member)
        for src, dst in net.pending():
            net.deliver(src, dst, rng.randrange(3))  # some make it before the cut
        a, b = rng.sample("abc", 2)
        if round_ % 2:
            net.unlink(a, b)
        else:
            net.link(a, b)
        assert net.monitor_errors() == []
    net.link_all()
    converged(net)
    for name in "abc":
        for group in ("g", "h"):
            expected: Counter[str] = Counter()
            for owner in "abc":
                expected.update(net.scope(owner).local_members(group))
            assert Counter(net.scope(name).members(group)) == expected


@pytest.mark.parametrize("seed", range(20))
def test_any_delivery_order_across_links_converges(seed: int) -> None:
    rng = random.Random(seed)
    net = network("a", "b", "c", "d", linked=False)
    for name in "abcd":
        for i in range(3):
            net.scope(name).join(rng.choice(["g", "h"]), (name, i))
    net.link_all()
    net.scope("a").member_down(("a", 0))
    net.settle(rng)
    assert net.view_errors() == []
    assert net.monitor_errors() == []
    assert sum(len(net.scope("d").members(group)) for group in ("g", "h")) == 11


# -- the harness itself -------------------------------------------------------------------------


def test_the_harness_notices_a_view_that_breaks_the_guarantee() -> None:
    net = network("a", "b")
    net.inject("b", "a", Join(net.scope("b").incarnation, "g", ("invented",)))
    net.settle()
    assert net.view_errors() == [
        "a sees {'g': Counter({'invented': 1})}, expected {}",
    ]
