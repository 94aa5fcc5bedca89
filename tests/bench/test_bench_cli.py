"""``roost bench run`` through ``roost.cli.main``: both output modes, errors, exit codes."""

from __future__ import annotations

import json

import pytest

from roost.cli import main

QUICK = ["--samples", "2", "--sample-duration", "0.03"]


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "run", "sum(range(100))", *QUICK]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Code", "||", "Samples", "QPS", "StdDev", "Median", "P99", "Time"]
    assert lines[1].startswith("sum(range(100))")
    assert lines[1].split()[1:3] == ["1", "2"]  # concurrency, samples
    assert len(lines) == 2


def test_comparison_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bench",
        "run",
        "sum(range(10))",
        "tests.bench.bench_helpers:cpu_work",
        "-c",
        "2",
        *QUICK,
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "Rel"
    assert [line.split()[0] for line in lines[1:]] == [
        "sum(range(10))",
        "tests.bench.bench_helpers:cpu_work",
    ]
    assert [line.split()[1] for line in lines[1:]] == ["2", "2"]
    assert "100%" in [line.split()[-1] for line in lines[1:]]


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "run", "sum(range(10))", "sorted(range(10))", "--json", "--warmup", "1"]
    assert main([*argv, *QUICK]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "continuous"
    rows = document["results"]
    assert [row["name"] for row in rows] == ["sum(range(10))", "sorted(range(10))"]
    for row in rows:
        assert len(row["samples"]) == 2
        assert len(row["warmup_samples"]) == 1
        assert row["qps"] > 0
        assert row["mode"] == "tasks"
        assert set(row["stats"]) >= {"mean", "stddev", "median", "p99", "cv"}
    assert max(row["relative"] for row in rows) == 100.0


def test_squeeze_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "run", "sum(range(10))", "--squeeze", "--max", "2", "--threshold", "5"]
    assert main([*argv, *QUICK]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["Code", "||", "Samples", "QPS", "StdDev", "Time", "Best"]
    assert "sum(range(10)): best concurrency" in out

    assert main([*argv, *QUICK, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "squeeze"
    (squeezed,) = document["results"]
    assert [level["concurrency"] for level in squeezed["levels"]] == [1, 2]
    assert squeezed["best_concurrency"] in (1, 2)


def test_processes_and_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "run", "tests.bench.bench_helpers:needs_state", "--processes", "--json"]
    argv += [
        "--setup",
        "tests.bench.bench_helpers:setup_counter",
        "--teardown",
        "tests.bench.bench_helpers:teardown_counter",
    ]
    assert main([*argv, *QUICK]) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["mode"] == "processes"
    assert row["qps"] > 0


def test_failing_target_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "run", "1 / 0", *QUICK]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err
    assert "Traceback" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sum([])", "--samples", "0"], "--samples: must be at least 1"),
        (["sum([])", "--samples", "many"], "--samples: expected an integer, got 'many'"),
        (["sum([])", "--sample-duration", "0"], "--sample-duration: must be greater than 0"),
        (["sum([])", "--sample-duration", "nan"], "expected a finite number"),
        (["sum([])", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["no_such_module_for_roost:f"], "cannot import module 'no_such_module_for_roost'"),
        (["1 +"], "cannot compile '1 +'"),
        (["undefined_name_for_roost()"], "name 'undefined_name_for_roost' is not defined"),
        (["sum([])", "--setup", "not a hook"], "'module:callable'"),
        (["sum([])", "--min", "2"], "--min applies only with --squeeze"),
        (["sum([])", "--processes", "-q", "--min", "999"], "must be at least --min (999)"),
        (["sum([])", "--squeeze", "-c", "2"], "--concurrency cannot be combined with --squeeze"),
        (["sum([])", "--squeeze", "--min", "5", "--max", "2"], "--max (2) must be at least --min"),
        (["sum([])", "--squeeze", "--step", "0"], "--step 0 needs a --multiplier"),
        (["sum([])", "--cv", "0.1", "--samples", "1"], "--cv needs at least 2 --samples"),
        (["sum([])", "--max-samples", "9"], "--max-samples only applies together with --cv"),
        ([], "the following arguments are required: TARGET"),
    ],
)
def test_argument_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["bench", "run", *argv])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_needs_a_tool(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["bench"])
    assert caught.value.code == 2
    assert "TOOL" in capsys.readouterr().err
