"""How much a second node adds: 1:1 throughput of ``roost up --nodes 2`` against one node.

    .venv/bin/python -m benchmarks.cluster_scaling [--runs 3] [--clients 1000] [--duration 20]
    .venv/bin/python -m benchmarks.cluster_scaling --rate 15000   # CPU at equal load per node

Both set-ups serve the same users from the same data directory, driven by the same closed-loop
chat scenario of ``roost bench load`` (one message in flight per sender, to random online
peers):

* **one node**: ``roost up`` pinned to core 0, the generator pinned to core 1, which is how
  every single-server figure in docs/benchmarks.md is taken;
* **two nodes**: ``roost up --nodes 2`` (two node processes sharing the client port with
  SO_REUSEPORT, so the kernel spreads the logins and about half of all messages cross from
  one node to the other over the mesh), not pinned, and the generator not pinned either.

On a two-core machine the second set-up cannot give the generator a core of its own: the
generator's CPU is taken from the servers. The report therefore gives, beside the ratio of
delivered messages per second, the CPU-seconds the servers spent per 1,000 messages and the
share of a core the generator used, so that the ratio can be read for what it is, and the
ratio those CPU figures allow with a core per node (twice the CPU per message on one node
over the CPU per message on two). CPU is counted over the steady part of the run (between the
generator's first and last progress lines, :func:`~benchmarks.harness.steady_load`), without
the logins.

That projection is pessimistic: in the closed loop each of the two nodes carries about half
the load the one node carries, and a node's CPU per message grows as its load falls (fewer
messages share each turn of its event loop, each write and each read). ``--rate R`` compares
at equal load per node instead: an open loop of ``R`` messages a second against one node and
of ``2R`` against two, each node carrying ``R``, which is what a core per node would give
each of them. The two set-ups then differ only by the crossing (forwarding, the mesh link,
parsing on the receiving node), and ``2 x`` one node's CPU per message over two nodes' is the
ratio a machine with a core per node and the generator elsewhere would show at that load
per node (at saturation each node's own CPU per message is lower still, in both set-ups).

Message archiving is off unless ``--archive`` is given: with it, every node writes every
message to the one SQLite file of the data directory, and the figure would measure that
file's write lock (a cluster that archives at scale uses PostgreSQL). The share of messages
that crossed nodes comes from each node's forwarding counters (read through ``roost ctl``'s
socket with ``roost shell``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Server, ensure_users, start_roost, steady_load
from roost.config import DEFAULT_MODULES


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        path = task / "children"
        if path.exists():
            children.extend(int(c) for c in path.read_text().split())
    result = list(children)
    for child in children:
        result.extend(_descendants(child))
    return result


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(server: Server) -> float:
    """CPU-seconds of the server process and every process under it (the node processes)."""
    return _cpu(server.pid) + sum(_cpu(pid) for pid in _descendants(server.pid))


def forwarded(data_dir: Path, nodes: int) -> int:
    """Stanzas the nodes handed to each other (their forwarders' counters)."""
    total = 0
    for index in range(nodes):
        done = subprocess.run(
            [sys.executable, "-m", "roost", "shell", "--data-dir", str(data_dir),
             "--socket", str(data_dir / f"ctl-node{index + 1}.sock")],
            input=b"server.cluster.forwarder.statistics()['forwarded']\n",
            capture_output=True,
            cwd=ROOT,
            timeout=60,
        )  # fmt: skip
        digits = "".join(ch for ch in done.stdout.decode().strip().splitlines()[-1] if ch.isdigit())
        total += int(digits or 0)
    return total


def run(
    data_dir: Path, nodes: int, clients: int, duration: float, rate: int | None
) -> dict[str, Any]:
    """One set-up; with ``rate``, an open loop at ``rate`` messages a second per node."""
    extra = ["--nodes", str(nodes)] if nodes > 1 else []
    server = start_roost(data_dir, pinned=nodes == 1, extra=extra)
    try:
        args = ["--scenario", "chat", "--clients", str(clients), "--duration", str(duration)]
        if rate is not None:
            args += ["--rate", str(rate * nodes)]
        result, delivered, (cpu,) = steady_load(
            server, lambda: (tree_cpu(server),), *args, pinned=nodes == 1
        )
        traffic = result["traffic"]
        crossed = forwarded(data_dir, nodes) if nodes > 1 else 0
        return {
            "nodes": nodes,
            "delivered_per_s": traffic["delivered_per_s"],
            "delivered": traffic["delivered"],
            "lost": traffic["lost"],
            "cpu_s_per_1000": cpu / delivered * 1000,
            "crossed_share": crossed / max(1, traffic["delivered"]),
            "generator_cpu": result["generator"]["cpu_share"]["run"],
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "roost-bench-cluster"
    )
    parser.add_argument(
        "--rate",
        type=int,
        help="open loop at this many messages a second per node (one node at RATE, two at "
        "twice RATE), to compare CPU per message at equal load per node",
    )
    parser.add_argument(
        "--archive",
        action="store_true",
        help="keep message archiving (MAM) on; by default it is off, as in the one-node figures",
    )
    args = parser.parse_args()
    if not args.archive:
        os.environ["ROOST_MODULES__ENABLED"] = ",".join(m for m in DEFAULT_MODULES if m != "mam")
    setup = start_roost(args.data_dir)
    try:
        ensure_users(setup, args.clients)
    finally:
        setup.stop()
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for _ in range(args.runs):
        for nodes in (1, 2):  # interleaved, so that drift in the machine's load hits both
            results[nodes].append(run(args.data_dir, nodes, args.clients, args.duration, args.rate))
    print(json.dumps(results), file=sys.stderr)
    one = statistics.median(r["delivered_per_s"] for r in results[1])
    two = statistics.median(r["delivered_per_s"] for r in results[2])
    print("| set-up | delivered/s (median; runs) | server CPU-s per 1,000 | crossed nodes "
          "| generator CPU | lost |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for nodes, label in ((1, "1 node, pinned to 1 core"), (2, "`--nodes 2`, 2 cores shared")):
        rows = results[nodes]
        print(
            f"| {label} "
            f"| {statistics.median(r['delivered_per_s'] for r in rows):,.0f}; "
            f"{', '.join(format(r['delivered_per_s'], ',.0f') for r in rows)} "
            f"| {statistics.median(r['cpu_s_per_1000'] for r in rows):.3f} "
            f"| {statistics.median(r['crossed_share'] for r in rows):.0%} "
            f"| {statistics.median(r['generator_cpu'] for r in rows):.0%} "
            f"| {sum(r['lost'] for r in rows)} |"
        )
    cpu_one = statistics.median(r["cpu_s_per_1000"] for r in results[1])
    cpu_two = statistics.median(r["cpu_s_per_1000"] for r in results[2])
    if args.rate is None:
        print(f"\nratio two nodes / one node: {two / one:.2f}")
        # What two nodes would deliver with a core each and the generator elsewhere, if
        # each message cost what it cost here. Pessimistic: each of the two nodes ran at
        # about half the load of the one, and a node's CPU per message grows as its load
        # falls (fewer messages share each turn of its event loop); --rate compares at
        # equal load per node.
        print(f"ratio from CPU per message, a core per node: {2 * cpu_one / cpu_two:.2f}")
    else:
        # Each node carried the same load in both set-ups: with a core per node (and the
        # generator on cores of its own), two nodes would deliver this much more.
        print(f"\nratio from CPU per message at {args.rate:,} msg/s per node, a core per node: "
              f"{2 * cpu_one / cpu_two:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
