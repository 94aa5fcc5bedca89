"""``roost bench load``: an XMPP load generator that measures any XMPP server.

One process drives thousands of clients over raw asyncio sockets, logging them in as any
standards-following client would (no shortcut a particular server offers), then runs one of
three scenarios and reports what it measured::

    from roost.bench.load import LoadConfig, run_load

    result = await run_load(LoadConfig(host="127.0.0.1", port=5222, domain="localhost",
                                       scenario="chat", clients=1000, duration=20))
    print(result.traffic["delivered_per_s"], result.latency["p99_ms"], result.ok)

The modules, each the specification of its part:

* :mod:`~roost.bench.load.config`: what a run is asked to do, and the checks.
* :mod:`~roost.bench.load.scan`: framing the stream with ``bytes.find``, and why there is no
  XML parser on the hot path.
* :mod:`~roost.bench.load.client`: one client and its login state machine;
  :mod:`~roost.bench.load.tls`, :mod:`~roost.bench.load.sasl` and
  :mod:`~roost.bench.load.shared` (the scenario interface, batched writes) around it.
* :mod:`~roost.bench.load.scenarios`: idle and chat (closed and open loop), what counts as
  sent, delivered, lost, duplicate; :mod:`~roost.bench.load.presence`: roster fan-out.
* :mod:`~roost.bench.load.stats`: latency (HDR histogram), generator CPU, server RSS.
* :mod:`~roost.bench.load.runner`: the phases of a run and how failures are judged.
* :mod:`~roost.bench.load.result`, :mod:`~roost.bench.load.report`: the result and its text
  and JSON forms; :mod:`~roost.bench.load.cli`: the command line.

Importing this package is cheap; :func:`run_load` and :class:`LoadRun` load the generator
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from roost.bench.load.config import LoadConfig, User, read_users
from roost.bench.load.result import LoadResult

if TYPE_CHECKING:
    from roost.bench.load.runner import LoadRun, run_load

__all__ = ["LoadConfig", "LoadResult", "LoadRun", "User", "read_users", "run_load"]

_LAZY = {"run_load": "roost.bench.load.runner", "LoadRun": "roost.bench.load.runner"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'roost.bench.load' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
