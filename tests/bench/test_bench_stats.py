"""roost.bench.stats and the report's number formatting, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from roost.bench import report, stats


def test_four_values() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    # Deviations from 2.5 are +-1.5 and +-0.5: (2.25 + 0.25) * 2 = 5, over n - 1 = 3.
    assert stats.mean(values) == 2.5
    assert stats.stddev(values) == pytest.approx(math.sqrt(5 / 3))
    assert stats.median(values) == 2.5
    assert stats.percentile(values, 99) == 4.0
    assert stats.cv(values) == pytest.approx(math.sqrt(5 / 3) / 2.5)


def test_eight_values() -> None:
    values = [9.0, 2.0, 4.0, 4.0, 5.0, 4.0, 7.0, 5.0]
    # Squared deviations from 5: 16 + 9 + 1 + 1 + 0 + 1 + 4 + 0 = 32; 32 / 7.
    assert stats.mean(values) == 5.0
    assert stats.stddev(values) == pytest.approx(math.sqrt(32 / 7))
    assert stats.median(values) == 4.5
    assert stats.percentile(values, 99) == 9.0
    # Nearest rank: ceil(0.5 * 8) = 4th smallest; ceil(0.25 * 8) = 2nd smallest.
    assert stats.percentile(values, 50) == 4.0
    assert stats.percentile(values, 25) == 4.0
    assert stats.percentile(values, 12.5) == 2.0
    assert stats.cv(values) == pytest.approx(math.sqrt(32 / 7) / 5)


def test_percentile_on_a_hundred_values() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert stats.percentile(values, 99) == 99.0
    assert stats.percentile(values, 100) == 100.0
    assert stats.percentile(values, 1) == 1.0
    assert stats.median(values) == 50.5


def test_one_value_has_no_spread() -> None:
    assert stats.stddev([10.0]) == 0.0
    assert stats.cv([10.0]) == 0.0
    summary = stats.summarize([10.0])
    assert (summary.mean, summary.median, summary.p99, summary.count) == (10.0, 10.0, 10.0, 1)


def test_zero_mean_has_infinite_cv() -> None:
    assert stats.cv([0.0, 0.0]) == math.inf
    assert stats.summarize([0.0, 0.0]).to_dict()["cv"] is None


def test_summary() -> None:
    summary = stats.summarize([3.0, 1.0, 2.0])
    assert summary == stats.Summary(
        count=3, mean=2.0, stddev=1.0, median=2.0, p99=3.0, minimum=1.0, maximum=3.0, cv=0.5
    )


@pytest.mark.parametrize("function", [stats.mean, stats.stddev, stats.median, stats.cv])
def test_empty_is_an_error(function: object) -> None:
    assert callable(function)
    with pytest.raises(ValueError, match="empty"):
        function([])


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_percentile_range(p: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        stats.percentile([1.0], p)


@pytest.mark.parametrize(
    ("rate", "text"),
    [(0.5, "0.50"), (512, "512"), (12_345, "12.3 k"), (1_234_567, "1.23 M"), (2.5e9, "2.50 G")],
)
def test_format_rate(rate: float, text: str) -> None:
    assert report.format_rate(rate) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (7.3e-7, "730 ns"),
        (1.234e-6, "1.23 us"),
        (0.0456, "45.6 ms"),
        (2.0, "2.00 s"),
        (math.inf, "-"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert report.format_duration(seconds) == text
