"""``roost ctl bench``: a micro-benchmark run inside a live node.

Some code can only be measured where it lives: a hook with the node's real modules loaded, a
registry lookup against the real sessions, a storage call against the real database under the
real load. ``roost ctl bench CODE`` runs :func:`roost.bench.run_async` (or ``squeeze_async``)
in the node's own event loop, as asyncio tasks beside everything the node is doing, and
returns the same result ``roost bench run`` prints. The code sees the node as ``server``::

    roost ctl bench 'server.sessions.routes("alice@localhost")'
    roost ctl bench 'await server.storage.get_roster("alice@localhost")' --concurrency 8
    roost ctl bench 'server.router.route(...)' --squeeze --max 32

It evaluates arbitrary code in the node, like ``roost shell``, so it is refused where the
shell is (``admin.shell = false``) and every run goes to the audit log. The measured code
shares the loop with the node's clients: it slows them down while it runs, which is what a
measurement "under real load" means, and why the default run is short (3 samples of 1 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roost.admin.commands import Arg, CommandError, command

if TYPE_CHECKING:
    from roost.core.server import Server


def _render(result: dict[str, Any]) -> str:
    from roost.bench.report import format_duration, format_rate, render

    rows = []
    for run in result["results"]:
        best = run.get("best", False)
        stats = run["stats"]
        rows.append(
            [
                run["name"],
                str(run["concurrency"]),
                str(stats["count"]),
                format_rate(stats["mean"]),
                f"{stats['stddev'] / stats['mean'] * 100:.1f}%" if stats["mean"] else "-",
                format_rate(stats["median"]),
                format_duration(run["time_per_op"] or float("inf")),
                "*" if best else "",
            ]
        )
    headers = ["Code", "||", "Samples", "QPS", "StdDev", "Median", "Time", "Best"]
    return render(headers, rows)


@command(
    "bench",
    "measure the throughput of Python code inside the node (it sees the node as `server`)",
    Arg("code", "a Python expression or statements; `await` allowed"),
    Arg("concurrency", "concurrent workers (asyncio tasks)", type=int, flag=True, required=False,
        default=1),
    Arg("samples", "samples to measure", type=int, flag=True, required=False, default=3),
    Arg("sample_duration", "seconds per sample", type=float, flag=True, required=False,
        default=1.0),
    Arg("squeeze", "add workers while throughput grows; report every level", type=bool,
        flag=True, required=False),
    Arg("max", "with --squeeze, the largest concurrency tried", type=int, flag=True,
        required=False, default=64),
    render=_render,
    audit=True,
    evaluates=True,
)  # fmt: skip
async def bench(
    node: Server,
    code: str,
    concurrency: int,
    samples: int,
    sample_duration: float,
    squeeze: bool,
    max: int,  # the option is --max, as in `roost bench run`
) -> dict[str, Any]:
    from roost.bench import run_async, squeeze_async  # not at import: node start-up
    from roost.bench.errors import BenchmarkError

    if not node.config.admin_shell:
        raise CommandError(
            "shell-disabled", "code evaluation is disabled on this node (admin.shell = false)"
        )
    if not 1 <= concurrency <= 10_000 or not 1 <= samples <= 600 or not 1 <= max <= 10_000:
        raise CommandError(
            "bad-arguments", "concurrency and --max must be 1..10000, samples 1..600"
        )
    if not 0.01 <= sample_duration <= 60:
        raise CommandError("bad-arguments", "sample-duration must be 0.01..60 seconds")
    target = _bind_server(code)
    try:
        if squeeze:
            result = await squeeze_async(
                target,
                setup=lambda: node,
                samples=samples,
                sample_duration=sample_duration,
                max=max,
            )
            levels = [{**level.to_dict(), "best": level is result.best} for level in result.levels]
            return {"kind": "squeeze", "results": levels, "best": result.concurrency}
        run = await run_async(
            target,
            setup=lambda: node,
            concurrency=concurrency,
            samples=samples,
            sample_duration=sample_duration,
        )
    except BenchmarkError as exc:
        raise CommandError("failed", str(exc)) from None
    return {"kind": "continuous", "results": [run.to_dict()]}


def _bind_server(code: str) -> str:
    """``code`` with the node bound to the name ``server``.

    A compiled benchmark source sees its setup hook's result as ``state``; the setup here
    returns the node. The source becomes two statements, so its value is not returned: code
    that measures a coroutine says ``await`` (``await server.storage.get_roster(...)``).
    """
    return "server = state\n" + code
