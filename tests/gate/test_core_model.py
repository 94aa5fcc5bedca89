"""Properties of the gate core under any sequence of calls, outcomes, peers and operators.

Hypothesis drives one GateCore with random operations on a virtual clock and checks, after
every step, what must always hold: the safety valve's count is the number of partitions not
closed and never exceeds the cap, a half-open partition never has more trial calls under way
than it admits, and calls in flight are exactly the calls admitted and not yet ended.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from roost.gate import GateCore, GateRejected, Outcome, Partition, Policy, State
from roost.gate.testing import VirtualClock

PARTITIONS = ["p0", "p1", "p2", "p3"]


class GateModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock()
        self.policy = Policy(
            consecutive_failures=3,
            failure_rate=0.5,
            slow_call_rate=0.5,
            slow_call_threshold=1.0,
            minimum_calls=4,
            window=10.0,
            open_for=5.0,
            half_open_calls=2,
            max_concurrent=4,
            max_open_share=0.5,
        )
        self.core = GateCore("g", self.policy)
        self.held: list[tuple[Partition, int]] = []

    @rule(partition=st.sampled_from(PARTITIONS))
    def admit(self, partition: str) -> None:
        try:
            self.held.append(self.core.admit(partition, self.clock()))
        except GateRejected:
            pass

    @rule(partition=st.sampled_from(PARTITIONS), count=st.integers(min_value=2, max_value=5))
    def burst(self, partition: str, count: int) -> None:
        for _ in range(count):
            self.admit(partition)

    @rule(partition=st.sampled_from(PARTITIONS), outcome=st.sampled_from(list(Outcome)))
    def end_all(self, partition: str, outcome: Outcome) -> None:
        for slot, generation in [h for h in self.held if h[0].name == partition]:
            self.held.remove((slot, generation))
            self.core.record(slot, generation, self.clock(), 0.1, outcome, "boom")

    @rule(
        index=st.integers(min_value=0, max_value=20),
        outcome=st.sampled_from(list(Outcome)),
        took=st.sampled_from([0.0, 0.5, 1.5]),
    )
    def end(self, index: int, outcome: Outcome, took: float) -> None:
        if not self.held:
            return
        slot, generation = self.held.pop(index % len(self.held))
        self.core.record(slot, generation, self.clock(), took, outcome, "boom")

    @rule(seconds=st.sampled_from([0.1, 1.0, 2.5, 5.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if seconds > 4:
            self.core.poll(self.clock())

    @rule(partition=st.sampled_from(PARTITIONS), opened=st.booleans())
    def peer(self, partition: str, opened: bool) -> None:
        state = State.OPEN if opened else State.CLOSED
        self.core.remote(partition, state, self.clock(), node="peer", open_for=5.0)

    @rule(
        partition=st.sampled_from([*PARTITIONS, None]),
        mode=st.sampled_from(["open", "closed", "auto"]),
        ttl=st.sampled_from([None, 1.0, 30.0]),
    )
    def operator(self, partition: str | None, mode: str, ttl: float | None) -> None:
        self.core.force(partition, mode, ttl, self.clock())

    @rule(rank=st.integers(min_value=0, max_value=2))
    def ranked(self, rank: int) -> None:
        self.core.probe_rank = rank

    def overridden(self, partition: Partition) -> bool:
        return (partition.override or self.core.override) is not None

    @invariant()
    def open_partitions_never_exceed_the_cap(self) -> None:
        not_closed = [p for p in self.core if p.state is not State.CLOSED]
        assert self.core.open_count == len(not_closed)
        assert len(not_closed) <= self.policy.open_limit(len(self.core))

    @invariant()
    def half_open_never_admits_more_than_its_trial_calls(self) -> None:
        for partition in self.core:
            if partition.state is not State.HALF_OPEN or self.overridden(partition):
                continue  # an operator's override, not the machine, admits calls now
            under_way = sum(
                1
                for slot, generation in self.held
                if slot is partition and generation == partition.generation
            )
            assert under_way <= partition.trials <= self.policy.half_open_calls
            assert partition.successes + under_way <= self.policy.half_open_calls

    @invariant()
    def calls_in_flight_are_the_calls_admitted_and_not_ended(self) -> None:
        for partition in self.core:
            held = sum(1 for slot, _ in self.held if slot is partition)
            assert partition.in_flight == held
            assert held <= self.policy.max_concurrent


GateModel.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestGateModel = GateModel.TestCase
