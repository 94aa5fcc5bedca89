"""roost bench: roost's own measurement tools.

Two tools live here:

* **Micro-benchmarks** (``roost bench run``; ``run``, ``compare``, ``squeeze`` below), after
  erlperf's continuous mode: workers loop a piece of code while a sampler reads their shared
  operation counter at fixed intervals, giving throughput samples (operations per second)
  with mean, spread, median and p99; ``compare`` ranks several pieces of code, ``squeeze``
  finds the concurrency at which throughput stops growing. See ``roost.bench.micro`` for the
  model and ``roost.bench.targets`` for what a target may be.
* **Load generation** against a running XMPP server (``roost bench load``), developed
  separately and registered as another ``roost bench`` tool.

Results are frozen dataclasses with ``to_dict()`` for JSON. ``run``, ``compare`` and
``squeeze`` block (they start their own event loop); their ``*_async`` twins run in the
caller's loop, which lets a benchmark use objects bound to it.

Importing this package is cheap: the functions are loaded on first use, so
``roost --help`` does not pay for asyncio or multiprocessing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from roost.bench.errors import BenchmarkError, TargetError
from roost.bench.results import CompareResult, RunResult, SqueezeResult
from roost.bench.stats import Summary

if TYPE_CHECKING:
    from roost.bench.micro import (
        compare,
        compare_async,
        run,
        run_async,
        squeeze,
        squeeze_async,
    )

_LAZY = {
    "run": "roost.bench.micro",
    "run_async": "roost.bench.micro",
    "compare": "roost.bench.micro",
    "compare_async": "roost.bench.micro",
    "squeeze": "roost.bench.micro",
    "squeeze_async": "roost.bench.micro",
}

__all__ = [
    "BenchmarkError",
    "CompareResult",
    "RunResult",
    "SqueezeResult",
    "Summary",
    "TargetError",
    "compare",
    "compare_async",
    "run",
    "run_async",
    "squeeze",
    "squeeze_async",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'roost.bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
