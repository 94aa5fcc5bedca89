"""The state table and the sliding window."""

from __future__ import annotations

import pytest

from roost.gate import TRANSITIONS, Event, GateStateError, State, Window, transition


def test_the_table_lists_the_documented_transitions() -> None:
    assert transition(State.CLOSED, Event.TRIP) is State.OPEN
    assert transition(State.OPEN, Event.COOL_DOWN) is State.HALF_OPEN
    assert transition(State.HALF_OPEN, Event.PROBES_PASSED) is State.CLOSED
    assert transition(State.HALF_OPEN, Event.PROBE_FAILED) is State.OPEN
    assert transition(State.OPEN, Event.RESET) is State.CLOSED
    assert transition(State.OPEN, Event.TRIP) is State.OPEN


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (State.CLOSED, Event.COOL_DOWN),
        (State.CLOSED, Event.PROBES_PASSED),
        (State.CLOSED, Event.PROBE_FAILED),
        (State.CLOSED, Event.RESET),
        (State.OPEN, Event.PROBES_PASSED),
        (State.HALF_OPEN, Event.COOL_DOWN),
    ],
)
def test_an_event_without_a_transition_names_state_and_event(state: State, event: Event) -> None:
    assert (state, event) not in TRANSITIONS
    with pytest.raises(GateStateError) as raised:
        transition(state, event)
    assert raised.value.state == state.value
    assert raised.value.event == event.value
    assert state.value in str(raised.value)
    assert event.value in str(raised.value)


def test_every_state_can_be_left() -> None:
    assert {state for state, _ in TRANSITIONS} == set(State)
    assert set(TRANSITIONS.values()) == set(State)


def test_the_window_counts_what_it_is_told() -> None:
    window = Window(10.0, now=0.0)
    window.record(0.5, failed=False, slow=False)
    window.record(1.5, failed=True, slow=False)
    window.record(2.5, failed=False, slow=True)
    assert (window.calls, window.failures, window.slow) == (3, 1, 1)


def test_old_outcomes_slide_out_of_the_window() -> None:
    window = Window(10.0, now=0.0)
    window.record(0.5, failed=True, slow=False)
    window.record(5.5, failed=True, slow=True)
    window.advance(10.9)  # the bucket of 0.5 s is gone, the one of 5.5 s is not
    assert (window.calls, window.failures, window.slow) == (1, 1, 1)
    window.advance(15.6)
    assert (window.calls, window.failures, window.slow) == (0, 0, 0)


def test_a_long_silence_empties_the_window_at_once() -> None:
    window = Window(10.0, now=0.0)
    for i in range(50):
        window.record(i / 10, failed=i % 2 == 0, slow=False)
    window.advance(1000.0)
    assert window.calls == 0
    window.record(1000.0, failed=True, slow=False)
    assert (window.calls, window.failures) == (1, 1)


def test_a_clock_that_steps_back_records_into_the_newest_bucket() -> None:
    window = Window(10.0, now=100.0)
    window.record(100.0, failed=False, slow=False)
    window.record(99.0, failed=True, slow=False)
    assert (window.calls, window.failures) == (2, 1)
    assert "calls=2" in repr(window)
