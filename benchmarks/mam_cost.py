"""What message archiving (XEP-0313) costs: 1:1 throughput with MAM on and off, SM on and off.

    .venv/bin/python -m benchmarks.mam_cost [--runs 3] [--clients 1000] [--duration 20]
    .venv/bin/python -m benchmarks.mam_cost --rate 5000   # CPU per message at a fixed rate

Four set-ups, taken one after another in each run (interleaved and rotated, so that drift in
the load of the shared machine hits all four alike):

* ``roost up`` with the default modules, or with every default module but ``mam``
  (``ROOST_MODULES__ENABLED``), pinned to core 0;
* ``roost bench load --scenario chat`` (by default a closed loop: one message in flight per
  sender, to random online peers; with ``--rate``, that many messages a second), pinned to
  core 1, with or without ``--sm`` (stream management, the clients acknowledging what they
  receive).

Every run starts from a copy of one data directory in which the users were registered once, so
each starts with an empty archive. Besides delivered messages per second, the report gives the
server's CPU per message split by thread, over the steady part of the run (read at each of the
generator's progress lines, so logins and the final drain are left out): the event loop (the
main thread) and the rest, which is the SQLite thread (``/proc/PID/task/TID/stat``). Both run
on the one server core, so the SQLite thread's CPU is taken from the loop's. The archive rows
written are counted after the server stopped, to check that what was measured was archived
(two rows per message: the sender's and the recipient's copy).

The ratios are those of the issue: MAM on ÷ off with SM off, with SM on, and SM + MAM ÷
neither (the target is >= 0.7), as throughput in the closed loop, and as server CPU per
message (off ÷ on) in both modes. The closed loop is the issue's measure, but on a shared
machine it moves with whatever else runs; CPU per message at a fixed rate compares the work
itself, at equal batching of reads and writes. Results go to docs/benchmarks-mam.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import Server, ensure_users, start_roost, steady_load
from roost.config import DEFAULT_MODULES

SETUPS: dict[str, tuple[bool, bool]] = {  # name -> (mam, sm)
    "neither": (False, False),
    "mam": (True, False),
    "sm": (False, True),
    "sm+mam": (True, True),
}


def _ticks(stat: Path) -> float:
    """User + system CPU-seconds from a /proc stat file (0 when it is gone)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_thread(server: Server) -> tuple[float, float]:
    """(CPU-seconds of the event-loop thread, of every other thread) of the server so far."""
    loop = _ticks(Path(f"/proc/{server.pid}/task/{server.pid}/stat"))
    return loop, _ticks(Path(f"/proc/{server.pid}/stat")) - loop


def archived(data_dir: Path) -> int:
    connection = sqlite3.connect(data_dir / "roost.db")
    try:
        (rows,) = connection.execute("SELECT coalesce(sum(n), 0) FROM archive_chunk").fetchone()
    finally:
        connection.close()
    return int(rows)


def chat(server: Server, *args: str) -> tuple[dict[str, Any], dict[str, float]]:
    """Run the chat scenario; its JSON, and the server's CPU per message by thread over the
    steady part of the run (:func:`~benchmarks.harness.steady_load`)."""
    result, delivered, (loop, other) = steady_load(
        server, lambda: cpu_by_thread(server), "--scenario", "chat", *args
    )
    return result, {"loop_us": loop / delivered * 1e6, "other_us": other / delivered * 1e6}


def run(
    template: Path, work: Path, setup: str, clients: int, duration: float, *extra: str
) -> dict[str, Any]:
    mam, sm = SETUPS[setup]
    data_dir = work / setup
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(template, data_dir)
    modules = DEFAULT_MODULES if mam else [m for m in DEFAULT_MODULES if m != "mam"]
    os.environ["ROOST_MODULES__ENABLED"] = ",".join(modules)
    server = start_roost(data_dir)
    try:
        args = ["--clients", str(clients), "--duration", str(duration)]
        result, cpu = chat(server, *args, *(["--sm"] if sm else []), *extra)
    finally:
        server.stop()
    traffic = result["traffic"]
    return {
        "setup": setup,
        "delivered_per_s": traffic["delivered_per_s"],
        "delivered": traffic["delivered"],
        "lost": traffic["lost"],
        **cpu,
        "generator_cpu": result["generator"]["cpu_share"]["run"],
        "archived_per_message": archived(data_dir) / max(1, traffic["delivered"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "roost-bench-mam"
    )
    parser.add_argument("--rate", type=int, help="open loop: messages a second (closed loop)")
    parser.add_argument("--only", choices=sorted(SETUPS), action="append", help="these set-ups")
    args = parser.parse_args()
    extra = ["--rate", str(args.rate)] if args.rate else []
    setups = args.only or list(SETUPS)
    template = args.data_dir / "template"
    if not (template / "roost.db").exists():
        template.mkdir(parents=True, exist_ok=True)
        os.environ["ROOST_MODULES__ENABLED"] = ",".join(DEFAULT_MODULES)
        server = start_roost(template)
        try:
            ensure_users(server, args.clients)
        finally:
            server.stop()
    results: dict[str, list[dict[str, Any]]] = {setup: [] for setup in setups}
    for index in range(args.runs):
        # Interleaved, and rotated so that no set-up always follows the same one.
        for setup in setups[index % len(setups) :] + setups[: index % len(setups)]:
            outcome = run(template, args.data_dir, setup, args.clients, args.duration, *extra)
            results[setup].append(outcome)
            print(json.dumps(outcome), file=sys.stderr)

    def median(setup: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[setup]))

    print(
        "| set-up | delivered/s (median; runs) | loop thread µs/msg | other threads µs/msg "
        "| archive rows/msg | generator CPU | lost |"
    )
    print("|---|---|---|---|---|---|---|")
    for setup in setups:
        rows = results[setup]
        print(
            f"| {setup} "
            f"| {median(setup, 'delivered_per_s'):,.0f}; "
            f"{', '.join(format(r['delivered_per_s'], ',.0f') for r in rows)} "
            f"| {median(setup, 'loop_us'):.1f} "
            f"| {median(setup, 'other_us'):.1f} "
            f"| {median(setup, 'archived_per_message'):.2f} "
            f"| {median(setup, 'generator_cpu'):.0%} "
            f"| {sum(r['lost'] for r in rows)} |"
        )
    print()
    for top, bottom, label in (
        ("mam", "neither", "MAM on / off, SM off"),
        ("sm+mam", "sm", "MAM on / off, SM on"),
        ("sm+mam", "neither", "SM + MAM / neither (target >= 0.7)"),
    ):
        if top in results and bottom in results:
            throughput = median(top, "delivered_per_s") / median(bottom, "delivered_per_s")
            cpu = (median(bottom, "loop_us") + median(bottom, "other_us")) / (
                median(top, "loop_us") + median(top, "other_us")
            )
            print(f"{label}: throughput {throughput:.2f}, CPU per message {cpu:.2f}")


if __name__ == "__main__":
    main()
