"""The open loop's pacer: every message goes out stamped with the moment it was due."""

from __future__ import annotations

import itertools
import time

from roost.bench.load.pacer import Pacer


async def test_it_sends_at_the_rate_each_message_stamped_with_its_due_time() -> None:
    sent: list[tuple[int, int, int]] = []  # (number, stamp, when sent)
    pacer = Pacer(1000)

    def send(number: int, stamp_ns: int) -> None:
        sent.append((number, stamp_ns, time.monotonic_ns()))

    await pacer.run(lambda: True, send, 0.2)

    assert [number for number, _, _ in sent] == list(range(len(sent)))
    assert len(sent) == 200  # 0.2 s at 1,000/s
    stamps = [stamp for _, stamp, _ in sent]
    # Due times are exactly one interval (1 ms) apart, whenever the sends happened...
    assert {b - a for a, b in itertools.pairwise(stamps)} <= {
        999_999,
        1_000_000,
        1_000_001,
    }
    # ...and no message leaves before it is due.
    assert all(when >= stamp for _, stamp, when in sent)
    summary = pacer.summary()
    assert summary["target_rate"] == 1000
    assert summary["max_lag_ms"] >= 0


async def test_it_stops_when_the_scenario_stops_sending() -> None:
    sent: list[int] = []
    pacer = Pacer(1000)

    def send(number: int, stamp_ns: int) -> None:
        sent.append(number)

    await pacer.run(lambda: len(sent) < 10, send, 30)

    assert sent == list(range(10))
    assert pacer.elapsed < 30
