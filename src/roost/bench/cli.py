"""``roost bench``: the measurement tools' command line.

``bench`` is a group: each tool is a sub-subcommand registered by a function of the
subparsers object, listed in ``SUBCOMMANDS``. Adding one (``roost bench load``) is one
registrar appended there; registrars must stay cheap, so heavy imports belong in handlers.

``roost bench run TARGET [TARGET...]`` runs micro-benchmarks (see ``roost.bench.micro``):

    roost bench run 'sum(range(100))'                       # one target, 3 x 1 s samples
    roost bench run 'sum(range(100))' 'sorted(range(100))'  # comparison, with a Rel column
    roost bench run mymodule:handler --concurrency 8 --warmup 1
    roost bench run 'await asyncio.sleep(0.001)' --squeeze --max 64
    roost bench run mymodule:crunch --processes --squeeze --json

A TARGET is ``module:callable`` or Python source; the current directory is put on
``sys.path`` (as ``python -m`` does) so a module next to you can be named. ``--setup`` and
``--teardown`` take ``module:callable`` hooks and apply to every target.

Exit codes: 0 done; 1 the code under test failed while being measured (message and
traceback on stderr); 2 bad arguments, including a target that cannot be imported or compiled
(argparse's ``error``, which prints the usage line too).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from roost.bench.load.cli import register as register_load

Registrar = Callable[[Any], None]


def _number(kind: type[int] | type[float], least: float, strict: bool) -> Callable[[str], Any]:
    """An argparse ``type=`` converting to ``kind`` and enforcing a lower bound."""
    noun = "an integer" if kind is int else "a number"
    bound = f"greater than {least:g}" if strict else f"at least {least:g}"

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < least or (strict and value == least):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value

    return convert


_positive_int = _number(int, 1, strict=False)
_count = _number(int, 0, strict=False)
_positive_float = _number(float, 0, strict=True)
_nonnegative_float = _number(float, 0, strict=False)
_multiplier = _number(float, 1, strict=False)

# Squeeze-only options (dest names); left at None unless given, so that they can be rejected
# without --squeeze and the API's defaults apply otherwise.
_SQUEEZE_OPTIONS = ("min", "max", "step", "multiplier", "threshold", "tolerance")


def register_run(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="micro-benchmark code: throughput, comparison, concurrency squeeze",
        description=(
            "Loop each TARGET in concurrent workers and sample the operation count every "
            "--sample-duration seconds; report throughput (QPS) statistics. With several "
            "targets, compare them. With --squeeze, find the best concurrency."
        ),
        epilog="TARGET is 'module:callable' or Python source, e.g. 'sum(range(100))'.",
    )
    parser.add_argument("targets", nargs="+", metavar="TARGET", help="code to benchmark")
    parser.add_argument(
        "-c",
        "--concurrency",
        type=_positive_int,
        default=None,
        metavar="N",
        help="workers per target (default 1; not with --squeeze)",
    )
    parser.add_argument(
        "-s",
        "--samples",
        type=_positive_int,
        default=3,
        metavar="N",
        help="samples to measure (default 3)",
    )
    parser.add_argument(
        "-w",
        "--warmup",
        type=_count,
        default=0,
        metavar="N",
        help="samples to take and discard first (default 0)",
    )
    parser.add_argument(
        "-d",
        "--sample-duration",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="length of one sample (default 1)",
    )
    parser.add_argument(
        "--cv",
        type=_positive_float,
        default=None,
        metavar="X",
        help="keep sampling until the last N samples' stddev/mean < X",
    )
    parser.add_argument(
        "--max-samples",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --cv, give up after N samples (default 10 x --samples)",
    )
    parser.add_argument(
        "--setup",
        default=None,
        metavar="HOOK",
        help="module:callable run before the workers; its result is the state",
    )
    parser.add_argument(
        "--teardown",
        default=None,
        metavar="HOOK",
        help="module:callable run after the workers (receives the state)",
    )
    parser.add_argument(
        "--processes", action="store_true", help="one worker process per worker, for CPU-bound code"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    squeeze = parser.add_argument_group("concurrency squeeze")
    squeeze.add_argument(
        "-q",
        "--squeeze",
        action="store_true",
        help="add workers while throughput grows; report the best level",
    )
    squeeze.add_argument(
        "--min", type=_positive_int, metavar="N", help="first concurrency (default 1)"
    )
    squeeze.add_argument(
        "--max",
        type=_positive_int,
        metavar="N",
        help="last concurrency (default 1000 tasks / 2 x CPUs processes)",
    )
    squeeze.add_argument(
        "--step", type=_count, metavar="N", help="workers added per level (default 1)"
    )
    squeeze.add_argument(
        "--multiplier",
        type=_multiplier,
        metavar="X",
        help="next level = ceil(level * X) + step (default 1)",
    )
    squeeze.add_argument(
        "--threshold",
        type=_positive_int,
        metavar="N",
        help="stop after N levels without a new best (default 3)",
    )
    squeeze.add_argument(
        "--tolerance",
        type=_nonnegative_float,
        metavar="X",
        help="a new best must beat the old by more than X (default 0.05)",
    )
    parser.set_defaults(handler=lambda args: _run(parser, args))


# Sub-subcommands of 'roost bench', in help order. Append a registrar to add one.
SUBCOMMANDS: list[Registrar] = [register_run, register_load]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measurement tools (micro-benchmarks)",
        description="roost's measurement tools.",
    )
    tools = parser.add_subparsers(dest="bench_command", metavar="TOOL", required=True)
    for registrar in SUBCOMMANDS:
        registrar(tools)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject bad combinations and unusable targets before anything runs (exit code 2)."""
    # Imported here, not at module level: 'roost --help' must not pay for them.
    from roost.bench.errors import TargetError
    from roost.bench.micro import Mode, Plan, default_max_concurrency, prepare

    given = [f"--{name}" for name in _SQUEEZE_OPTIONS if getattr(args, name) is not None]
    if given and not args.squeeze:
        verb = "applies" if len(given) == 1 else "apply"
        parser.error(f"{', '.join(given)} {verb} only with --squeeze")
    if args.squeeze and args.concurrency is not None:
        parser.error("--concurrency cannot be combined with --squeeze, which chooses it")
    mode: Mode = "processes" if args.processes else "tasks"
    if args.squeeze and args.min is not None:
        high = args.max if args.max is not None else default_max_concurrency(mode)
        if high < args.min:
            parser.error(f"--max ({high}) must be at least --min ({args.min})")
    if args.squeeze and args.step == 0 and (args.multiplier or 1) == 1:
        parser.error("--step 0 needs a --multiplier above 1, or no worker is ever added")
    try:
        Plan(args.samples, args.warmup, args.sample_duration, args.cv, args.max_samples)
    except ValueError as exc:
        parser.error(_as_options(str(exc)))
    for target in args.targets:
        try:
            prepare(target, args.setup, args.teardown, mode)
        except TargetError as exc:
            parser.error(str(exc))


def _as_options(message: str) -> str:
    """Speak in option names: the API's 'max_samples' is the command line's '--max-samples'."""
    for name in ("max_samples", "sample_duration", "samples", "warmup", "cv"):
        option = "--" + name.replace("_", "-")
        message = re.sub(rf"(?<![\w-]){name}\b", option, message)
    return message


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _check(parser, args)

    from roost.bench import report
    from roost.bench.errors import BenchmarkError
    from roost.bench.micro import compare, squeeze

    common: dict[str, Any] = {
        "samples": args.samples,
        "warmup": args.warmup,
        "sample_duration": args.sample_duration,
        "cv": args.cv,
        "max_samples": args.max_samples,
        "setup": args.setup,
        "teardown": args.teardown,
        "mode": "processes" if args.processes else "tasks",
    }
    try:
        if args.squeeze:
            levels: dict[str, Any] = {
                name: getattr(args, name)
                for name in _SQUEEZE_OPTIONS
                if getattr(args, name) is not None
            }
            results = [squeeze(target, **levels, **common) for target in args.targets]
            if args.json:
                text = report.dumps(report.squeeze_json(results))
            else:
                text = report.squeeze_table(results)
        else:
            comparison = compare(args.targets, concurrency=args.concurrency or 1, **common)
            if args.json:
                text = report.dumps(report.run_json(comparison))
            else:
                text = report.run_table(comparison)
    except BenchmarkError as exc:
        print(f"roost bench run: error: {exc}", file=sys.stderr)
        if exc.details:
            print(exc.details.rstrip(), file=sys.stderr)
        return 1
    print(text)
    return 0
