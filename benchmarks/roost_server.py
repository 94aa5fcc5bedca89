"""roost's own figures: idle memory per session, 1:1 throughput and latency, on one core.

    .venv/bin/python -m benchmarks.roost_server [--users 10000] [--runs 3] [--quick]

For each measurement the server is started afresh (``roost up --allow-plaintext``, pinned to
core 0) on a data directory whose users were registered once, and ``roost bench load`` runs
pinned to core 1:

* idle: N clients log in, send initial presence and stay; server RSS growth per session after
  the streams have gone idle (plain TCP, then STARTTLS);
* chat, closed loop: 1,000 online users, one message in flight per sender, 20 s; delivered/s
  and server CPU-seconds per 1,000 messages;
* chat, open loop at 2,000 msg/s for 20 s: latency percentiles.

Medians over ``--runs`` runs are printed as a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import Server, ensure_users, load, start_roost


def idle(data_dir: Path, users: int, *, tls: bool) -> dict[str, float]:
    server = start_roost(data_dir)
    try:
        args = ["--scenario", "idle", "--clients", str(users), "--duration", "15"]
        if tls:
            args.append("--tls")
        result = load(server, *args)
        rss = result["server"]["rss"]
        online = result["clients"]["online"]
        return {
            "online": online,
            "per_session_kib": (rss["end_bytes"] - rss["before_bytes"]) / online / 1024,
            "login_per_s": result["clients"]["login_per_s"],
        }
    finally:
        server.stop()


def chat(data_dir: Path, *args: str) -> dict[str, Any]:
    server = start_roost(data_dir)
    try:
        cpu_before = server.cpu_seconds()
        result = load(server, "--scenario", "chat", "--clients", "1000", "--duration", "20", *args)
        cpu = server.cpu_seconds() - cpu_before
        traffic = result["traffic"]
        return {
            "delivered_per_s": traffic["delivered_per_s"],
            "lost": traffic["lost"],
            "cpu_s_per_1000": cpu / max(1, traffic["delivered"]) * 1000,
            "latency": result["latency"],
            "generator_cpu": result["generator"]["cpu_share"]["run"],
        }
    finally:
        server.stop()


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "roost-bench"
    )
    args = parser.parse_args()

    setup: Server = start_roost(args.data_dir)
    try:
        ensure_users(setup, args.users)
    finally:
        setup.stop()

    rows: list[tuple[str, str]] = []
    plain = [idle(args.data_dir, args.users, tls=False) for _ in range(args.runs)]
    rows.append(
        (
            f"idle session, plain TCP ({args.users:,} sessions)",
            f"{median([r['per_session_kib'] for r in plain]):.1f} KiB",
        )
    )
    tls = [idle(args.data_dir, args.users, tls=True) for _ in range(args.runs)]
    rows.append(
        (
            f"idle session, STARTTLS ({args.users:,} sessions)",
            f"{median([r['per_session_kib'] for r in tls]):.1f} KiB",
        )
    )
    rows.append(("logins/s (PLAIN, plain TCP)", f"{median([r['login_per_s'] for r in plain]):.0f}"))
    closed = [chat(args.data_dir) for _ in range(args.runs)]
    rows.append(
        (
            "1:1 delivered/s, closed loop, 1,000 users",
            f"{median([r['delivered_per_s'] for r in closed]):,.0f} "
            f"(runs: {', '.join(format(r['delivered_per_s'], ',.0f') for r in closed)})",
        )
    )
    rows.append(
        (
            "server CPU-seconds per 1,000 messages",
            f"{median([r['cpu_s_per_1000'] for r in closed]):.3f}",
        )
    )
    rows.append(("messages lost", str(sum(r["lost"] for r in closed))))
    opened = [chat(args.data_dir, "--rate", "2000") for _ in range(args.runs)]
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
        rows.append(
            (
                f"latency at 2,000 msg/s, {key[:-3]}",
                f"{median([r['latency'][key] for r in opened]):.2f} ms",
            )
        )
    print("| measurement | roost |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
