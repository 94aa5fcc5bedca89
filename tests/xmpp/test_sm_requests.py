"""When the server asks a stream-management client for an acknowledgement (XEP-0198 §4): after
every REQUEST_EVERY unacknowledged stanzas, and from the listener's once-a-second sweep only on
the stream's own turn, with the turns of different streams spread over the sweeps."""

from __future__ import annotations

from itertools import pairwise

from roost.c2s.sm import REQUEST_EVERY, SWEEP_TURN, StreamManagement


def _stream(unacked: int = 0) -> StreamManagement:
    sm = StreamManagement(resume=False, max_queue=1000)
    for i in range(unacked):
        sm.track(f"<message id='{i}'/>".encode())
    return sm


def _asked_in(sm: StreamManagement, sweeps: int) -> list[int]:
    return [n for n in range(sweeps) if sm.sweep_request()]


def test_a_sweep_asks_a_stream_once_per_turn_while_stanzas_wait() -> None:
    sm = _stream(unacked=1)
    asked = _asked_in(sm, SWEEP_TURN * 3)
    assert len(asked) == 3
    assert [b - a for a, b in pairwise(asked)] == [SWEEP_TURN] * 2


def test_a_sweep_does_not_ask_a_stream_with_nothing_unacknowledged() -> None:
    sm = _stream()
    assert _asked_in(sm, SWEEP_TURN * 3) == []
    sm.track(b"<message/>")
    sm.ack(1)
    assert _asked_in(sm, SWEEP_TURN * 3) == []


def test_the_turns_of_many_streams_are_spread_over_the_sweeps() -> None:
    streams = [_stream(unacked=1) for _ in range(SWEEP_TURN * 20)]
    per_sweep = [sum(sm.sweep_request() for sm in streams) for _ in range(SWEEP_TURN)]
    assert per_sweep == [20] * SWEEP_TURN  # every stream once, a fifth of them per sweep


def test_traffic_asks_every_request_every_stanzas() -> None:
    sm = _stream()
    asked = []
    for i in range(REQUEST_EVERY * 3):
        sm.track(b"<message/>")
        if sm.should_request():
            asked.append(i + 1)
    assert asked == [REQUEST_EVERY, REQUEST_EVERY * 2, REQUEST_EVERY * 3]
