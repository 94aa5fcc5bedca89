"""roost.bench's micro-benchmark API: runs, targets, hooks, comparison, squeeze, processes.

Sample durations are short (tens of milliseconds): these tests check the mechanics (sample
counts, positive throughput, hooks, relative figures), never absolute speed.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

import roost.bench
from roost.bench import BenchmarkError, TargetError, micro
from roost.bench.micro import Plan, next_level
from roost.bench.targets import Hook, Target
from tests.bench import bench_helpers

QUICK = 0.03  # seconds per sample: enough for mechanics, short enough for a fast suite


def _assert_sane(result: roost.bench.RunResult, samples: int) -> None:
    assert len(result.samples) == samples
    assert all(sample > 0 for sample in result.samples)
    assert result.qps > 0
    assert result.time_per_op == pytest.approx(result.concurrency / result.qps)
    assert result.operations > 0
    json.dumps(result.to_dict(), allow_nan=False)


def test_sync_callable() -> None:
    result = roost.bench.run(lambda: None, samples=3, sample_duration=QUICK)
    _assert_sane(result, 3)
    assert result.mode == "tasks"
    assert result.concurrency == 1
    assert result.warmup_samples == ()
    assert result.cv_reached is None


async def _async_noop() -> None:
    await asyncio.sleep(0)


def test_async_callable_with_concurrency() -> None:
    result = roost.bench.run(_async_noop, concurrency=3, samples=2, sample_duration=QUICK)
    _assert_sane(result, 2)
    assert result.concurrency == 3
    assert result.name.endswith("_async_noop")


def test_warmup_samples_are_discarded() -> None:
    result = roost.bench.run("None", samples=2, warmup=2, sample_duration=QUICK)
    _assert_sane(result, 2)
    assert len(result.warmup_samples) == 2


@pytest.mark.parametrize(
    "target",
    [
        "sum(range(100))",
        "math.sqrt(2)",  # 'math' is imported for the expression
        "xml.etree.ElementTree.fromstring('<a/>')",  # and a submodule chain
        "values = [3, 1, 2]; values.sort()",  # statements, not only expressions
        "await asyncio.sleep(0)",  # top-level await makes an async runner
        "asyncio.sleep(0)",  # an expression producing an awaitable is awaited
        "tests.bench.bench_helpers:cpu_work",
        "json:dumps",  # a runner taking one argument gets the (absent) state: None
    ],
)
def test_string_targets(target: str) -> None:
    if target == "json:dumps":
        result = roost.bench.run(target, samples=1, setup="builtins:dict", sample_duration=QUICK)
    else:
        result = roost.bench.run(target, samples=1, sample_duration=QUICK)
    _assert_sane(result, 1)
    assert result.name == target


def test_expression_sees_setup_state() -> None:
    result = roost.bench.run("state.append(1)", samples=1, setup=list, sample_duration=QUICK)
    _assert_sane(result, 1)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("1 +", "cannot compile"),
        ("no_such_name_for_roost + 1", "no_such_name_for_roost"),
        ("no_such_module_for_roost:f", "cannot import module 'no_such_module_for_roost'"),
        ("tests.bench.bench_helpers:missing", "'missing' not found"),
        ("tests.bench.bench_helpers:MARK_FILE", "not callable"),
        ("tests.bench.bench_helpers:needs_state", "no setup hook"),
        ("", "empty"),
    ],
)
def test_bad_targets(target: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        roost.bench.run(target, samples=1, sample_duration=QUICK)


@pytest.mark.parametrize(
    "setup", [bench_helpers.setup_counter, "tests.bench.bench_helpers:async_setup"]
)
def test_setup_and_teardown(setup: Hook) -> None:
    bench_helpers.calls.clear()
    result = roost.bench.run(
        "tests.bench.bench_helpers:needs_state",
        samples=2,
        setup=setup,
        teardown="tests.bench.bench_helpers:teardown_counter",
        sample_duration=QUICK,
    )
    _assert_sane(result, 2)
    (setup_call, state), (teardown_call, torn_down) = bench_helpers.calls
    assert (setup_call, teardown_call) == ("setup", "teardown")
    assert torn_down is state  # teardown receives what setup returned
    assert state["runs"] >= result.operations > 0  # and so did the runner, on every call


def test_teardown_runs_when_the_runner_fails() -> None:
    bench_helpers.calls.clear()
    with pytest.raises(BenchmarkError, match="deliberate failure") as caught:
        roost.bench.run(
            bench_helpers.fails,
            samples=1,
            setup="tests.bench.bench_helpers:setup_counter",
            teardown="tests.bench.bench_helpers:teardown_counter",
            sample_duration=QUICK,
        )
    assert "RuntimeError" in caught.value.details
    assert [name for name, _ in bench_helpers.calls] == ["setup", "teardown"]


def test_compare() -> None:
    targets: list[Target] = ["sum(range(10))", "sum(range(1000))", bench_helpers.cpu_work]
    comparison = roost.bench.compare(targets, samples=2, sample_duration=QUICK)
    assert [r.name for r in comparison.results] == [
        "sum(range(10))",
        "sum(range(1000))",
        "tests.bench.bench_helpers.cpu_work",
    ]
    relative = [comparison.relative(r) for r in comparison.results]
    assert max(relative) == 100.0
    assert comparison.relative(comparison.fastest) == 100.0
    assert all(0 < value <= 100 for value in relative)
    document = comparison.to_dict()
    assert [row["relative"] for row in document["results"]] == relative


def test_cv_reached_and_not_reached() -> None:
    easy = roost.bench.run("None", samples=2, cv=1e9, sample_duration=QUICK)
    assert easy.cv_reached is True
    assert (len(easy.samples), len(easy.warmup_samples)) == (2, 0)
    # A cv of 1e-12 is never met: sampling stops at max_samples measured samples, and the
    # report covers the last window; the samples before it count as warm-up.
    hard = roost.bench.run(
        "None", samples=2, cv=1e-12, max_samples=4, warmup=1, sample_duration=QUICK
    )
    assert hard.cv_reached is False
    assert (len(hard.samples), len(hard.warmup_samples)) == (2, 3)


async def test_run_async_uses_the_running_loop() -> None:
    loop = asyncio.get_running_loop()
    seen: list[asyncio.AbstractEventLoop] = []

    async def runner() -> None:
        seen.append(asyncio.get_running_loop())

    result = await roost.bench.run_async(runner, samples=1, sample_duration=QUICK)
    _assert_sane(result, 1)
    assert set(seen) == {loop}


async def test_blocking_api_refuses_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="run_async"):
        roost.bench.run("None", samples=1, sample_duration=QUICK)


def test_squeeze_finds_the_concurrency_ceiling() -> None:
    # At most four callers can be inside limited() at once, each for 5 ms: throughput grows
    # by a third or more per level up to 4 workers and stays flat after. The tolerance (15 %)
    # absorbs noise past the ceiling but is well under the +33 % step from 3 to 4 workers.
    result = roost.bench.squeeze(
        "tests.bench.bench_helpers:limited",
        setup="tests.bench.bench_helpers:limited_setup",
        max=12,
        threshold=3,
        tolerance=0.15,
        samples=3,
        sample_duration=0.1,
    )
    assert result.concurrency == 4, [(r.concurrency, round(r.qps)) for r in result.levels]
    concurrencies = [level.concurrency for level in result.levels]
    assert concurrencies == list(range(1, len(concurrencies) + 1))
    assert concurrencies[-1] == 7  # three levels past the best without a new best
    document = result.to_dict()
    assert document["best_concurrency"] == 4
    assert len(document["levels"]) == 7


def test_squeeze_respects_max_and_multiplier() -> None:
    result = roost.bench.squeeze(
        "sum(range(10))",
        min=2,
        max=5,
        step=0,
        multiplier=2,
        threshold=10,
        samples=1,
        sample_duration=QUICK,
    )
    # 2, 4, then 8 clamped to max.
    assert [level.concurrency for level in result.levels] == [2, 4, 5]
    assert result.best in result.levels


def test_next_level() -> None:
    assert [next_level(c, 1, 1.0) for c in (1, 2, 9)] == [2, 3, 10]
    assert [next_level(c, 0, 2.0) for c in (1, 2, 3)] == [2, 4, 6]
    assert next_level(3, 1, 1.5) == 6  # ceil(4.5) + 1


def test_processes_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marks = tmp_path / "marks"
    monkeypatch.setenv(bench_helpers.MARK_FILE, str(marks))
    result = roost.bench.run(
        "tests.bench.bench_helpers:process_runner",
        mode="processes",
        concurrency=2,
        samples=2,
        setup="tests.bench.bench_helpers:process_setup",
        teardown=bench_helpers.process_teardown,  # a module-level function travels by name
        sample_duration=0.1,
    )
    _assert_sane(result, 2)
    assert result.mode == "processes"
    lines = sorted(marks.read_text().splitlines())
    setups = [line.split()[1] for line in lines if line.startswith("setup")]
    teardowns = [line.split()[1:] for line in lines if line.startswith("teardown")]
    assert len(set(setups)) == 2  # once in each of two worker processes
    assert sorted(teardowns) == sorted([pid, "7"] for pid in setups)


def test_processes_mode_reports_a_failing_runner() -> None:
    with pytest.raises(BenchmarkError, match="deliberate failure") as caught:
        roost.bench.run(
            "tests.bench.bench_helpers:fails", mode="processes", samples=1, sample_duration=QUICK
        )
    assert "Traceback" in caught.value.details


def test_processes_mode_needs_importable_targets() -> None:
    with pytest.raises(TargetError, match="worker process"):
        roost.bench.run(lambda: None, mode="processes", samples=1, sample_duration=QUICK)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"samples": 0}, "samples must be at least 1"),
        ({"warmup": -1}, "warmup"),
        ({"sample_duration": 0.0}, "sample_duration"),
        ({"sample_duration": math.inf}, "sample_duration"),
        ({"cv": 0.0}, "cv must be positive"),
        ({"cv": 0.1, "samples": 1}, "at least 2 samples"),
        ({"max_samples": 5}, "only applies together with cv"),
        ({"cv": 0.1, "samples": 3, "max_samples": 2}, "max_samples"),
    ],
)
def test_plan_validation(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Plan(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"mode": "threads"}, "mode must be one of"),
    ],
)
def test_run_validation(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        roost.bench.run("None", **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min": 0}, "min"),
        ({"min": 3, "max": 2}, "max"),
        ({"step": 0}, "never add a worker"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"threshold": 0}, "threshold"),
        ({"tolerance": -0.1}, "tolerance"),
    ],
)
def test_squeeze_validation(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        roost.bench.squeeze("None", **settings)  # type: ignore[arg-type]


def test_package_import_is_light() -> None:
    # The API is loaded lazily; the package itself must not pull in the runner machinery.
    import subprocess
    import sys

    code = (
        "import sys, roost.bench; "
        "print(sorted(m for m in ('asyncio', 'multiprocessing', 'roost.bench.micro') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert micro.run is roost.bench.run
