"""Policy validation and the safety valve's arithmetic."""

from __future__ import annotations

import pytest

from roost.gate import Policy


def test_the_defaults_are_valid() -> None:
    policy = Policy()
    assert policy.consecutive_failures == 5
    assert policy.half_open_calls == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_rate": 1.5},
        {"slow_call_rate": -0.1},
        {"max_open_share": 2.0},
        {"minimum_calls": 0},
        {"window": 0.0},
        {"open_for": 0.0},
        {"half_open_calls": 0},
        {"consecutive_failures": -1},
        {"max_concurrent": -1},
        {"call_timeout": -1.0},
    ],
)
def test_a_policy_out_of_bounds_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Policy(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("share", "partitions", "limit"),
    [(0.5, 1, 1), (0.5, 2, 1), (0.5, 3, 1), (0.5, 4, 2), (0.0, 10, 1), (1.0, 7, 7), (0.3, 10, 3)],
)
def test_one_partition_may_always_open(share: float, partitions: int, limit: int) -> None:
    assert Policy(max_open_share=share).open_limit(partitions) == limit
