"""Process groups, one scope at a time: local membership, monitors, and the protocol messages
a scope sends and how it treats those it receives."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from roost.cluster.pg import (
    PROTOCOL_VERSION,
    Discover,
    Event,
    Goodbye,
    Join,
    Leave,
    Message,
    Monitor,
    Scope,
    Sync,
    message_type,
)

Member = tuple[str, str, int]


def new_scope(node: str = "a", incarnation: int = 1) -> Scope[str, Any]:
    return Scope("default", node, incarnation=incarnation)


def known_peer(scope: Scope[str, Any], node: str = "b", incarnation: int = 7) -> None:
    """Make ``node`` a known peer of ``scope``, as after a discover exchange, and clear output."""
    scope.peer_up(node)
    scope.receive(node, Sync(incarnation, ()))
    scope.outgoing()


# -- local membership ---------------------------------------------------------------------------


def test_a_member_joined_twice_is_listed_twice_and_must_leave_twice() -> None:
    scope = new_scope()
    scope.join("g", "m")
    scope.join("g", "m")
    assert scope.members("g") == ("m", "m")
    assert scope.leave("g", "m")
    assert scope.members("g") == ("m",)
    assert scope.leave("g", "m")
    assert scope.members("g") == ()
    assert not scope.leave("g", "m")


def test_leave_is_false_only_when_none_of_the_members_had_joined() -> None:
    scope = new_scope()
    scope.join("g", "m1")
    assert not scope.leave("g", "x", "y")
    assert not scope.leave("other", "m1")
    assert scope.leave("g", "x", "m1")  # one of them had joined: it leaves, the other is ignored
    assert scope.which_groups() == []


def test_a_list_of_members_joins_and_leaves_at_once() -> None:
    scope = new_scope()
    scope.join("g", "m1", "m2", "m3")
    assert sorted(scope.members("g")) == ["m1", "m2", "m3"]
    assert scope.leave("g", "m1", "m3")
    assert scope.members("g") == ("m2",)


def test_empty_groups_do_not_exist() -> None:
    scope = new_scope()
    assert scope.members("nobody") == ()
    assert scope.local_members("nobody") == ()
    scope.join("g", "m")
    scope.join("h", "m")
    assert sorted(scope.which_groups()) == ["g", "h"]
    scope.leave("g", "m")
    assert scope.which_groups() == ["h"]
    assert scope.which_local_groups() == ["h"]


def test_joining_nobody_changes_nothing() -> None:
    scope = new_scope()
    known_peer(scope)
    scope.join("g")
    assert scope.which_groups() == []
    assert scope.outgoing() == []


def test_a_member_that_ends_leaves_every_group_as_often_as_it_joined() -> None:
    scope = new_scope()
    scope.join("g", "m", "m", "other")
    scope.join("h", "m")
    assert scope.member_down("m")
    assert scope.members("g") == ("other",)
    assert scope.which_groups() == ["g"]
    assert not scope.member_down("m")


def test_reads_share_one_tuple_until_the_group_changes() -> None:
    scope = new_scope()
    scope.join("g", "m1", "m2")
    first = scope.members("g")
    assert scope.members("g") is first
    assert scope.local_members("g") is scope.local_members("g")
    scope.join("g", "m3")
    assert scope.members("g") is not first
    assert first == ("m1", "m2")  # handed-out tuples never change


def test_remote_members_are_members_but_not_local_members() -> None:
    scope = new_scope()
    known_peer(scope)
    scope.join("g", "here")
    scope.receive("b", Join(7, "g", ("there",)))
    assert sorted(scope.members("g")) == ["here", "there"]
    assert scope.local_members("g") == ("here",)
    scope.receive("b", Join(7, "remote-only", ("there",)))
    assert sorted(scope.which_groups()) == ["g", "remote-only"]
    assert scope.which_local_groups() == ["g"]


def test_a_stopped_scope_refuses_local_operations() -> None:
    scope = new_scope()
    scope.stop()
    with pytest.raises(RuntimeError):
        scope.join("g", "m")


# -- monitors -----------------------------------------------------------------------------------


def test_a_scope_monitor_starts_with_the_current_groups_then_gets_every_change() -> None:
    scope = new_scope()
    scope.join("g", "m1")
    monitor, snapshot = scope.monitor_scope()
    assert snapshot == {"g": ("m1",)}
    scope.join("h", "m2", "m3")
    scope.leave("g", "m1")
    scope.join("g", "m2", "m2")
    scope.member_down("m2")
    assert monitor.drain() == [
        Event("join", "h", ("m2", "m3")),
        Event("leave", "g", ("m1",)),
        Event("join", "g", ("m2", "m2")),
        Event("leave", "h", ("m2",)),
        Event("leave", "g", ("m2", "m2")),
    ]
    assert monitor.drain() == []


def test_a_group_monitor_only_hears_of_its_group() -> None:
    scope = new_scope()
    scope.join("g", "m1")
    monitor, members = scope.monitor("g")
    assert members == ("m1",)
    scope.join("other", "m2")
    scope.join("g", "m2")
    assert monitor.drain() == [Event("join", "g", ("m2",))]


def test_monitoring_a_group_that_does_not_exist_yet_sees_it_appear() -> None:
    scope = new_scope()
    monitor, members = scope.monitor("later")
    assert members == ()
    scope.join("later", "m")
    assert monitor.drain() == [Event("join", "later", ("m",))]


def test_demonitor_stops_events_and_drops_those_not_drained() -> None:
    scope = new_scope()
    monitor, _ = scope.monitor_scope()
    group_monitor, _ = scope.monitor("g")
    scope.join("g", "m")
    assert len(monitor) == 1
    assert scope.demonitor(monitor)
    assert scope.demonitor(group_monitor)
    assert len(monitor) == 0
    scope.join("g", "m2")
    assert monitor.drain() == []
    assert group_monitor.drain() == []
    assert not scope.demonitor(monitor)


def test_the_wakeup_is_called_when_the_first_undrained_event_arrives() -> None:
    scope = new_scope()
    woken: list[Monitor[str, Any]] = []
    monitor, _ = scope.monitor_scope(woken.append)
    scope.join("g", "m1")
    scope.join("g", "m2")
    assert woken == [monitor]
    monitor.drain()
    scope.join("g", "m3")
    assert woken == [monitor, monitor]


def test_monitors_see_remote_changes() -> None:
    scope = new_scope()
    monitor, _ = scope.monitor_scope()
    known_peer(scope)
    scope.receive("b", Join(7, "g", ("r1", "r2")))
    scope.receive("b", Leave(7, ("r1",), ("g",)))
    assert monitor.drain() == [
        Event("join", "g", ("r1", "r2")),
        Event("leave", "g", ("r1",)),
    ]


# -- the protocol: what a scope sends -----------------------------------------------------------


def test_a_peer_coming_up_is_sent_a_discover_with_our_incarnation_and_version() -> None:
    scope = new_scope(incarnation=42)
    scope.peer_up("b")
    assert scope.outgoing() == [("b", Discover(42, PROTOCOL_VERSION))]
    assert scope.outgoing() == []


def test_a_new_peer_discovering_us_gets_all_local_groups_and_a_discover_back() -> None:
    scope = new_scope(incarnation=1)
    scope.join("g", "m1", "m2")
    scope.join("h", "m1")
    scope.peer_up("b")
    scope.outgoing()
    scope.receive("b", Discover(7))
    assert scope.outgoing() == [
        ("b", Sync(1, (("g", ("m1", "m2")), ("h", ("m1",))))),
        ("b", Discover(1)),
    ]
    assert scope.known_peers() == ["b"]
    scope.receive("b", Discover(7))  # a known peer asking again only gets the sync
    assert scope.outgoing() == [("b", Sync(1, (("g", ("m1", "m2")), ("h", ("m1",)))))]


def test_the_sync_carries_local_members_only() -> None:
    scope = new_scope()
    known_peer(scope, "b")
    scope.receive("b", Join(7, "g", ("remote",)))
    scope.join("g", "local")
    scope.peer_up("c")
    scope.outgoing()
    scope.receive("c", Discover(9))
    assert scope.outgoing()[0] == ("c", Sync(1, (("g", ("local",)),)))


def test_local_changes_go_to_known_peers_only() -> None:
    scope = new_scope()
    known_peer(scope, "b")
    scope.peer_up("c")  # linked, but its scope has not answered
    scope.outgoing()
    scope.join("g", "m", "m")
    scope.join("h", "m")
    scope.leave("g", "m", "absent")
    scope.member_down("m")
    assert scope.outgoing() == [
        ("b", Join(1, "g", ("m", "m"))),
        ("b", Join(1, "h", ("m",))),
        ("b", Leave(1, ("m",), ("g",))),
        ("b", Leave(1, ("m",), ("g", "h"))),  # one message for every group the member was in
    ]


def test_a_failed_leave_sends_nothing() -> None:
    scope = new_scope()
    known_peer(scope)
    assert not scope.leave("g", "m")
    assert scope.outgoing() == []


def test_stopping_says_goodbye_to_every_linked_node_and_forgets_everything() -> None:
    scope = new_scope(incarnation=3)
    known_peer(scope, "b")
    scope.peer_up("c")
    scope.outgoing()
    scope.join("g", "m")
    scope.outgoing()
    monitor, _ = scope.monitor_scope()
    scope.stop()
    assert scope.outgoing() == [("b", Goodbye(3)), ("c", Goodbye(3))]
    assert scope.which_groups() == []
    assert not monitor.active


# -- the protocol: what a scope accepts ---------------------------------------------------------


def test_a_sync_replaces_everything_known_of_the_peer_with_events_for_the_difference() -> None:
    scope = new_scope()
    scope.peer_up("b")
    scope.receive("b", Sync(7, (("g", ("m1", "m2")), ("h", ("m1",)))))
    monitor, _ = scope.monitor_scope()
    scope.receive("b", Sync(7, (("g", ("m2", "m3", "m3")), ("k", ("m4",)))))
    assert sorted(scope.members("g")) == ["m2", "m3", "m3"]
    assert scope.members("h") == ()
    assert scope.members("k") == ("m4",)
    assert monitor.drain() == [
        Event("leave", "g", ("m1",)),
        Event("join", "g", ("m3", "m3")),
        Event("leave", "h", ("m1",)),
        Event("join", "k", ("m4",)),
    ]


def test_an_identical_sync_changes_nothing() -> None:
    scope = new_scope()
    scope.peer_up("b")
    content = (("g", ("m1", "m2")),)
    scope.receive("b", Sync(7, content))
    before = scope.members("g")
    monitor, _ = scope.monitor_scope()
    scope.receive("b", Sync(7, content))
    assert scope.members("g") is before
    assert monitor.drain() == []


def test_a_sync_answers_our_discover_and_makes_the_peer_known() -> None:
    scope = new_scope()
    scope.peer_up("b")
    scope.outgoing()
    scope.receive("b", Sync(7, (("g", ("r",)),)))
    assert scope.known_peers() == ["b"]
    assert scope.outgoing() == []  # no discover back: the peer knows us, it answered ours
    scope.join("g", "l")
    assert scope.outgoing() == [("b", Join(1, "g", ("l",)))]


def test_joins_and_leaves_from_a_peer_we_do_not_know_yet_are_ignored() -> None:
    scope = new_scope()
    scope.peer_up("b")
    scope.receive("b", Join(7, "g", ("m",)))
    assert scope.members("g") == ()
    scope.receive("b", Sync(7, (("g", ("m",)),)))
    scope.peer_up("c")
    scope.receive("c", Leave(8, ("m",), ("g",)))
    assert scope.members("g") == ("m",)


def test_messages_from_a_node_that_is_not_linked_are_ignored() -> None:
    scope = new_scope()
    scope.receive("stray", Sync(5, (("g", ("m",)),)))
    scope.receive("stray", Discover(5))
    assert scope.members("g") == ()
    assert scope.known_peers() == []
    assert scope.outgoing() == []


def test_a_peer_going_down_takes_all_it_owned_with_leave_events() -> None:
    scope = new_scope()
    scope.join("g", "local")
    known_peer(scope, "b")
    known_peer(scope, "c", incarnation=8)
    scope.receive("b", Join(7, "g", ("b1", "b1")))
    scope.receive("b", Join(7, "h", ("b2",)))
    scope.receive("c", Join(8, "h", ("c1",)))
    monitor, _ = scope.monitor_scope()
    scope.peer_down("b")
    assert scope.members("g") == ("local",)
    assert scope.members("h") == ("c1",)
    assert scope.known_peers() == ["c"]
    assert monitor.drain() == [
        Event("leave", "g", ("b1", "b1")),
        Event("leave", "h", ("b2",)),
    ]
    scope.receive("b", Join(7, "g", ("late",)))  # after the down: not linked any more
    assert scope.members("g") == ("local",)


def test_a_goodbye_forgets_the_peer_unless_it_is_from_another_incarnation() -> None:
    scope = new_scope()
    known_peer(scope, "b", incarnation=7)
    scope.receive("b", Join(7, "g", ("m",)))
    scope.receive("b", Goodbye(6))
    assert scope.members("g") == ("m",)
    scope.receive("b", Goodbye(7))
    assert scope.members("g") == ()
    assert scope.known_peers() == []


def test_a_remote_leave_removes_each_member_once_per_group_listed() -> None:
    scope = new_scope()
    known_peer(scope)
    scope.receive("b", Join(7, "g", ("m", "m", "m", "n")))
    scope.receive("b", Join(7, "h", ("m",)))
    scope.receive("b", Leave(7, ("m", "absent"), ("g", "g", "h", "nowhere")))
    assert sorted(scope.members("g")) == ["m", "n"]
    assert scope.members("h") == ()


def test_a_remote_leave_cannot_take_members_another_node_joined() -> None:
    scope = new_scope()
    scope.join("g", "shared")
    known_peer(scope)
    scope.receive("b", Leave(7, ("shared",), ("g",)))
    assert scope.members("g") == ("shared",)


def test_a_discover_from_a_newer_protocol_version_is_answered() -> None:
    scope = new_scope()
    scope.join("g", "m")
    scope.peer_up("b")
    scope.outgoing()
    scope.receive("b", Discover(7, version=PROTOCOL_VERSION + 41))
    assert scope.outgoing() == [("b", Sync(1, (("g", ("m",)),))), ("b", Discover(1))]


# -- incarnations -------------------------------------------------------------------------------


def test_a_discover_from_a_new_incarnation_forgets_the_old_one_first() -> None:
    scope = new_scope()
    known_peer(scope, "b", incarnation=7)
    scope.receive("b", Join(7, "g", ("old",)))
    monitor, _ = scope.monitor_scope()
    scope.receive("b", Discover(8))
    assert scope.members("g") == ()
    assert monitor.drain() == [Event("leave", "g", ("old",))]
    assert scope.outgoing()[-1] == ("b", Discover(1))  # the new incarnation does not know us


def test_messages_of_an_old_incarnation_are_stale_once_the_new_one_spoke() -> None:
    scope = new_scope()
    known_peer(scope, "b", incarnation=7)
    scope.receive("b", Sync(8, (("g", ("new",)),)))
    scope.receive("b", Join(7, "g", ("old",)))
    scope.receive("b", Leave(7, ("new",), ("g",)))
    scope.receive("b", Goodbye(7))
    assert scope.members("g") == ("new",)
    assert scope.known_peers() == ["b"]


def test_a_link_coming_up_twice_restarts_the_exchange() -> None:
    scope = new_scope()
    known_peer(scope, "b")
    scope.receive("b", Join(7, "g", ("m",)))
    scope.peer_up("b")
    assert scope.members("g") == ()
    assert scope.outgoing() == [("b", Discover(1))]


# -- on the wire --------------------------------------------------------------------------------


def test_messages_survive_messagepack_with_hashable_members() -> None:
    decoder = msgspec.msgpack.Decoder(message_type(str, Member))
    messages: list[Message[str, Member]] = [
        Discover(1),
        Sync(1, (("g", (("s1", "phone", 5), ("s2", "desk", 0))),)),
        Join(1, "g", (("s1", "phone", 5),)),
        Leave(1, (("s1", "phone", 5),), ("g", "h")),
        Goodbye(1),
    ]
    for message in messages:
        decoded = decoder.decode(msgspec.msgpack.encode(message))
        assert decoded == message
    join = decoder.decode(msgspec.msgpack.encode(messages[2]))
    assert isinstance(join, Join)
    assert {member for member in join.members} == {("s1", "phone", 5)}


def test_a_discover_with_fields_from_a_future_version_decodes() -> None:
    decoder = msgspec.msgpack.Decoder(message_type(str, str))
    future = msgspec.msgpack.encode(["discover", 7, 3, {"compression": "zstd"}, "more"])
    assert decoder.decode(future) == Discover(7, version=3)
    minimal = msgspec.msgpack.encode(["discover", 7])
    assert decoder.decode(minimal) == Discover(7, version=PROTOCOL_VERSION)
