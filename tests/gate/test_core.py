"""The gate core against scripted outcome sequences, on a virtual clock."""

from __future__ import annotations

import pytest

from roost.gate import GateCore, GateFull, GateOpen, Outcome, Policy, State, Trip
from roost.gate.testing import VirtualClock

S, F, C = Outcome.SUCCESS, Outcome.FAILURE, Outcome.CANCELLED


class Script:
    """Drives a GateCore: calls with outcomes and durations, on a virtual clock."""

    def __init__(self, policy: Policy, **kwargs: str) -> None:
        self.clock = VirtualClock()
        self.core = GateCore("storage", policy, **kwargs)

    def call(self, outcome: Outcome = S, *, partition: str = "db", took: float = 0.01) -> None:
        slot, generation = self.core.admit(partition, self.clock())
        self.clock.advance(took)
        self.core.record(slot, generation, self.clock(), took, outcome, "StorageError: boom")

    def calls(self, outcomes: str, partition: str = "db", took: float = 0.01) -> None:
        """``"SSFF"``: successes and failures, in order."""
        for letter in outcomes:
            self.call({"S": S, "F": F}[letter], partition=partition, took=took)

    def state(self, partition: str = "db") -> State:
        found = self.core.get(partition)
        assert found is not None
        return found.state

    def events(self) -> list[str]:
        return [change.event for change in self.core.take_changes()]

    def refused(self, partition: str = "db") -> GateOpen:
        with pytest.raises(GateOpen) as raised:
            self.core.admit(partition, self.clock())
        return raised.value


ONLY_CONSECUTIVE = Policy(consecutive_failures=5, failure_rate=0, slow_call_rate=0)
ONLY_RATE = Policy(consecutive_failures=0, failure_rate=0.5, slow_call_rate=0, minimum_calls=20)


def test_five_failures_in_a_row_open_the_partition() -> None:
    script = Script(ONLY_CONSECUTIVE)
    script.calls("FFFF")
    assert script.state() is State.CLOSED
    script.call(F)
    assert script.state() is State.OPEN
    [change] = script.core.take_changes()
    assert change.event == "trip"
    assert change.trip is not None
    assert change.trip.policy == "consecutive_failures"
    assert change.trip.reason == "5 failures in a row"
    assert change.trip.numbers == {"consecutive": 5, "threshold": 5}
    assert change.trip.error == "StorageError: boom"
    assert change.open_for == ONLY_CONSECUTIVE.open_for


def test_a_success_breaks_a_run_of_failures() -> None:
    script = Script(ONLY_CONSECUTIVE)
    script.calls("FFFFSFFFFSFFFF")
    assert script.state() is State.CLOSED


def test_an_open_partition_refuses_at_once_with_the_time_left_and_the_reason() -> None:
    script = Script(ONLY_CONSECUTIVE)
    script.calls("FFFFF")
    script.clock.advance(2.0)
    refused = script.refused()
    assert refused.retry_after == pytest.approx(ONLY_CONSECUTIVE.open_for - 2.0)
    assert refused.reason == "open: 5 failures in a row"
    assert (refused.gate, refused.partition) == ("storage", "db")
    assert script.core.get("db") is not None
    assert script.core.get("db").rejected == 1  # type: ignore[union-attr]


def test_the_failure_rate_needs_the_minimum_number_of_calls() -> None:
    script = Script(ONLY_RATE)
    script.calls("SF" * 9 + "S")  # 19 calls, 9 failed
    assert script.state() is State.CLOSED
    script.call(F)  # 20 calls, 10 failed: 50 %
    assert script.state() is State.OPEN
    trip = script.core.get("db").last_trip  # type: ignore[union-attr]
    assert trip is not None
    assert trip.policy == "failure_rate"
    assert trip.numbers == {
        "calls": 20,
        "failures": 10,
        "slow": 0,
        "rate": 0.5,
        "threshold": 0.5,
    }
    assert trip.reason == "50% of 20 calls failed in 10 s"


def test_failures_older_than_the_window_do_not_count() -> None:
    script = Script(ONLY_RATE)
    script.calls("F" * 15)
    script.clock.advance(ONLY_RATE.window)
    script.calls("S" * 15 + "FFFFF")
    assert script.state() is State.CLOSED


def test_mostly_slow_calls_open_the_partition() -> None:
    policy = Policy(
        consecutive_failures=0,
        failure_rate=0,
        slow_call_rate=0.8,
        slow_call_threshold=1.0,
        minimum_calls=10,
        window=100.0,
    )
    script = Script(policy)
    script.calls("SSS", took=0.1)
    script.calls("SSSSSS", took=1.5)
    assert script.state() is State.CLOSED  # 9 calls: not enough to judge
    script.call(S, took=1.0)  # exactly the threshold counts as slow: 7 of 10
    assert script.state() is State.CLOSED
    script.calls("SS", took=2.0)  # 9 of 12 = 75 %
    assert script.state() is State.CLOSED
    script.calls("SS", took=2.0)  # 11 of 14 = 79 %
    assert script.state() is State.CLOSED
    script.call(S, took=2.0)  # 12 of 15 = 80 %
    assert script.state() is State.OPEN
    trip = script.core.get("db").last_trip  # type: ignore[union-attr]
    assert trip is not None
    assert trip.policy == "slow_call_rate"
    assert trip.numbers["slow"] == 12
    assert "took 1 s or more" in trip.reason


def test_the_bulkhead_refuses_calls_beyond_the_limit_without_tripping() -> None:
    script = Script(Policy(max_concurrent=2))
    core, now = script.core, script.clock()
    first = core.admit("db", now)
    core.admit("db", now)
    with pytest.raises(GateFull) as raised:
        core.admit("db", now)
    assert raised.value.reason == "2 calls in flight"
    core.record(*first, now, 0.0, S)
    core.admit("db", now)  # room again
    assert script.state() is State.CLOSED
    assert core.get("db").rejected == 1  # type: ignore[union-attr]


def test_half_open_admits_the_trial_calls_and_closes_when_they_pass() -> None:
    script = Script(ONLY_CONSECUTIVE)
    script.calls("FFFFF")
    script.clock.advance(ONLY_CONSECUTIVE.open_for)
    core, now = script.core, script.clock()
    trials = [core.admit("db", now) for _ in range(ONLY_CONSECUTIVE.half_open_calls)]
    assert script.state() is State.HALF_OPEN
    assert script.refused().reason == "half-open: 3 trial calls under way"
    for slot, generation in trials:
        core.record(slot, generation, now, 0.01, S)
    assert script.state() is State.CLOSED
    assert script.events() == ["trip", "cool-down", "probes-passed"]
    script.calls("FFFF")  # the old failures are forgotten: four more do not trip it
    assert script.state() is State.CLOSED


def test_a_failed_trial_call_opens_the_partition_again() -> None:
    script = Script(ONLY_CONSECUTIVE)
    script.calls("FFFFF")
    script.clock.advance(ONLY_CONSECUTIVE.open_for)
    script.calls("SF")
    assert script.state() is State.OPEN
    trip = script.core.get("db").last_trip  # type: ignore[union-attr]
    assert trip is not None
    assert (trip.policy, trip.reason) == ("half_open", "a trial call failed")
    assert script.events() == ["trip", "cool-down", "probe-failed"]
    assert script.refused().retry_after == pytest.approx(ONLY_CONSECUTIVE.open_for)


def test_a_slow_trial_call_opens_the_partition_again() -> None:
    script = Script(Policy(slow_call_threshold=1.0))
    script.calls("FFFFF")
    script.clock.advance(5.0)
    script.call(S, took=1.5)
    assert script.state() is State.OPEN
    trip = script.core.get("db").last_trip  # type: ignore[union-attr]
    assert trip is not None
    assert trip.reason == "a trial call took 1.5 s"


def test_a_cancelled_trial_call_gives_its_slot_back() -> None:
    script = Script(Policy(half_open_calls=1))
    script.calls("FFFFF")
    script.clock.advance(5.0)
    script.call(C)
    assert script.state() is State.HALF_OPEN
    script.call(S)
    assert script.state() is State.CLOSED


def test_a_call_from_before_the_trip_is_no_trial_call() -> None:
    script = Script(ONLY_CONSECUTIVE)
    core = script.core
    early = core.admit("db", script.clock())  # admitted while closed, answers much later
    script.calls("FFFFF")
    script.clock.advance(5.0)
    trial = core.admit("db", script.clock())
    assert script.state() is State.HALF_OPEN
    core.record(*early, script.clock(), 6.0, F)  # a late failure: not the trial's
    assert script.state() is State.HALF_OPEN
    core.record(*trial, script.clock(), 0.01, S)
    assert script.state() is State.HALF_OPEN  # one of three trials passed
    assert core.get("db").failures == 6  # type: ignore[union-attr]


def test_the_safety_valve_keeps_most_partitions_in_service() -> None:
    script = Script(Policy(max_open_share=0.5))
    for partition in ("a", "b", "c", "d"):
        script.calls("S", partition=partition)
    script.calls("FFFFF", partition="a")
    script.calls("FFFFF", partition="b")
    script.calls("FFFFF", partition="c")  # a third of four would be over half
    assert [script.state(p) for p in "abcd"] == [State.OPEN, State.OPEN, State.CLOSED, State.CLOSED]
    assert script.core.get("c").suppressed == 1  # type: ignore[union-attr]
    assert script.core.open_count == 2
    script.calls("S", partition="c")  # still in service


def test_a_single_partition_can_always_open() -> None:
    script = Script(Policy(max_open_share=0.0))
    script.calls("FFFFF")
    assert script.state() is State.OPEN


def test_forced_open_refuses_until_its_ttl_runs_out() -> None:
    script = Script(Policy())
    script.calls("S")
    script.core.force("db", "open", 30.0, script.clock(), by="alice")
    refused = script.refused()
    assert refused.reason == "forced open by alice"
    assert refused.retry_after == pytest.approx(30.0)
    script.clock.advance(30.0)
    script.calls("S")
    changes = script.core.take_changes()
    assert [(c.event, c.override is None) for c in changes] == [
        ("override", False),
        ("expired", True),
    ]


def test_forced_closed_lets_calls_through_an_open_partition_and_never_trips() -> None:
    script = Script(ONLY_CONSECUTIVE)
    script.calls("FFFFF")
    script.core.force("db", "closed", None, script.clock())
    assert script.state() is State.CLOSED
    script.calls("F" * 20)
    assert script.state() is State.CLOSED
    script.core.force("db", "auto", None, script.clock())
    script.calls("FFFFF")
    assert script.state() is State.OPEN


def test_a_gate_wide_override_covers_partitions_not_seen_yet() -> None:
    script = Script(Policy())
    script.calls("S", partition="a")
    script.core.force(None, "open", None, script.clock())
    assert script.refused("a").reason == "forced open by operator"
    assert script.refused("b").reason == "forced open by operator"
    script.core.force("a", "closed", None, script.clock())
    script.calls("S", partition="a")  # the partition's own override wins
    script.core.force(None, "auto", None, script.clock())
    script.calls("S", partition="b")
    script.calls("S", partition="a")


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        Script(Policy()).core.force("db", "ajar", None, 0.0)


def test_a_peer_trip_opens_the_partition_for_the_time_the_peer_said() -> None:
    script = Script(Policy(), node="node2")
    peer_trip = Trip("consecutive_failures", "5 failures in a row", node="node1")
    script.core.remote("db", State.OPEN, script.clock(), node="node1", trip=peer_trip, open_for=3.0)
    refused = script.refused()
    assert refused.reason == "open on node1: 5 failures in a row"
    assert refused.retry_after == pytest.approx(3.0)
    [change] = script.core.take_changes()
    assert (change.event, change.node) == ("trip", "node1")
    script.core.remote("db", State.OPEN, script.clock(), node="node3", open_for=1.0)
    assert script.core.take_changes() == []  # open here for longer already: nothing new
    script.core.remote("db", State.CLOSED, script.clock(), node="node1")
    assert script.state() is State.CLOSED
    script.core.remote("db", State.CLOSED, script.clock(), node="node1")  # nothing to do


def test_the_second_node_waits_one_open_period_before_its_trial_calls() -> None:
    script = Script(ONLY_CONSECUTIVE, node="node2")
    script.core.probe_rank = 1
    script.calls("FFFFF")
    script.clock.advance(5.0)
    refused = script.refused()
    assert refused.reason == "half-open: another node makes the trial calls"
    assert refused.retry_after == pytest.approx(5.0)
    script.clock.advance(5.0)
    script.calls("SSS")
    assert script.state() is State.CLOSED


def test_statistics_show_state_rates_and_the_last_trip() -> None:
    script = Script(ONLY_CONSECUTIVE)
    script.calls("SSSFFFFF", took=0.5)
    [row] = script.core.statistics(script.clock())
    assert row["state"] == "open"
    assert row["calls"] == 8
    assert row["failures"] == 5
    assert row["failure_rate"] == 0.625  # the window that tripped it, until it closes
    assert row["last_trip"]["reason"] == "5 failures in a row"
    assert row["last_error"] == "StorageError: boom"
    script.clock.advance(5.0)
    [row] = script.core.statistics(script.clock())
    assert row["state"] == "half-open"
    script.core.force(None, "open", 10.0, script.clock())
    [row] = script.core.statistics(script.clock())
    assert row["state"] == "forced-open"
    assert row["override"] == {
        "mode": "open",
        "ttl": 10.0,
        "by": "operator",
        "node": "",
        "scope": "gate",
    }


def test_rates_in_statistics_are_over_the_window() -> None:
    script = Script(Policy(consecutive_failures=0, minimum_calls=100))
    script.calls("SSSF")
    [row] = script.core.statistics(script.clock())
    assert (row["window_calls"], row["failure_rate"]) == (4, 0.25)


def test_a_new_window_length_starts_the_windows_afresh() -> None:
    script = Script(ONLY_RATE)
    script.calls("F" * 15)
    script.core.configure(Policy(consecutive_failures=0, minimum_calls=20, window=60.0), 0.0)
    script.calls("SSSSS")
    assert script.state() is State.CLOSED
    assert script.core.get("db").window.span == pytest.approx(60.0)  # type: ignore[union-attr]


def test_reprs_tell_the_state() -> None:
    script = Script(ONLY_CONSECUTIVE)
    script.calls("FFFFF")
    assert repr(script.core) == "<GateCore 'storage' partitions=1 open=1>"
    assert "'db' open" in repr(script.core.get("db"))
