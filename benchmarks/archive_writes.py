"""What archiving one message costs the SQLite store, by batch size and page cache.

    .venv/bin/python -m benchmarks.archive_writes [--users 1000] [--messages 150000]
        [--batches 1500,5000,20000] [--cache-kib 2048,32768] [--evict-mib 0] [--runs 3]

The message archive's writes without the rest of the server: ``SQLiteStorage.archive_messages``
on a fresh store whose users exist, fed the records the archiving module makes for 1:1 chat
between random pairs of ``--users`` users (two records a message, the sender's and the
recipient's, with a stanza like the load generator's). A batch is what the module hands the
store in one call; 1,500 records is what a tenth of a second of the closed-loop chat benchmark
gathered, 20,000 what up to a second gathers now. The figure is CPU time per record (the
process's, which here is the storage thread's: the event loop only waits), over every batch
but the first few; the archive grows to ``--messages`` times two rows during a run, as it
would in a server.

``--evict-mib N`` copies N MiB over itself before each batch, so that the batch's records
have left the CPU's caches when the store reads them, as they have in a server, where they
were made up to a second before (0: the records are as fresh as the batch makes them).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from roost.storage import sqlite as sqlite_storage
from roost.storage.base import ArchiveRecord
from roost.storage.sqlite import SQLiteStorage

WARM_UP = 3  # batches left out of the figure


def records(users: list[str], messages: int, seq: int) -> list[ArchiveRecord]:
    made: list[ArchiveRecord] = []
    for number in range(messages):
        sender, recipient = random.sample(users, 2)
        stanza = (
            f"<message type='chat' id='bench-{number}' to='{recipient}/load'"
            f" from='{sender}/load'><body>bench {number} 1779271461140</body></message>"
        )
        for owner, other, direction in ((sender, recipient, "out"), (recipient, sender, "in")):
            seq += 1
            archive_id = f"{seq:013x}" + "0" * 12
            made.append(ArchiveRecord(owner, seq, archive_id, f"{other}/load", direction, stanza))
    return made


async def run(
    directory: Path, users: int, messages: int, batch: int, cache_kib: int, evict_mib: int
) -> float:
    """CPU-microseconds per archived record."""
    scratch = bytearray(evict_mib << 20)
    sqlite_storage.CACHE_KIB = cache_kib  # read when the connection opens
    storage = SQLiteStorage(directory / "roost.db")
    await storage.open()
    try:
        jids = [f"load{index}@localhost" for index in range(users)]
        for jid in jids:
            await storage.create_user(jid, [])
        seq = time.time_ns() // 1000
        spent = 0.0
        counted = 0
        for number in range(max(WARM_UP + 1, messages * 2 // batch)):
            made = records(jids, batch // 2, seq)
            seq = made[-1].seq
            if scratch:
                scratch[:] = bytes(len(scratch))  # through every cache, out of the timed part
            started = time.process_time()
            await storage.archive_messages(made)
            if number >= WARM_UP:
                spent += time.process_time() - started
                counted += len(made)
        return spent / counted * 1e6
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=150_000)
    parser.add_argument("--batches", default="1500,5000,20000")
    parser.add_argument("--cache-kib", default="2048,32768")
    parser.add_argument("--evict-mib", default="0")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    batches = [int(value) for value in args.batches.split(",")]
    caches = [int(value) for value in args.cache_kib.split(",")]
    evictions = [int(value) for value in args.evict_mib.split(",")]
    results: dict[tuple[int, int, int], list[float]] = {}
    for _ in range(args.runs):  # interleaved, against drift in the machine's load
        for cache in caches:
            for batch in batches:
                for evict in evictions:
                    with tempfile.TemporaryDirectory() as directory:
                        cost = asyncio.run(
                            run(Path(directory), args.users, args.messages, batch, cache, evict)
                        )
                    results.setdefault((cache, batch, evict), []).append(cost)
    print("| page cache | records per batch | evicted | CPU µs per record (median; runs) |")
    print("|---|---|---|---|")
    for (cache, batch, evict), costs in results.items():
        runs = ", ".join(f"{cost:.2f}" for cost in costs)
        median = statistics.median(costs)
        print(f"| {cache:,} KiB | {batch:,} | {evict} MiB | {median:.2f}; {runs} |")


if __name__ == "__main__":
    main()
