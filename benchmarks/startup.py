"""Start-up time: ``roost up`` to its ready line on an empty data dir, and the test fixture.

    .venv/bin/python -m benchmarks.startup [--runs N]

The first figure is what a person waits for after ``make up`` (creating the SQLite store and
a self-signed certificate included); the second is what every end-to-end test pays.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from roost.testing import running_server


def time_roost_up(runs: int) -> list[float]:
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as directory:
            started = time.perf_counter()
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "roost",
                    "up",
                    "--data-dir",
                    directory,
                    "--c2s-port",
                    "0",
                    "--c2s-tls-port",
                    "0",
                    "--websocket-port",
                    "0",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert process.stdout is not None
            line = process.stdout.readline()
            results.append(time.perf_counter() - started)
            process.terminate()
            process.wait(timeout=30)
            if b"roost ready" not in line:
                raise SystemExit(f"unexpected output: {line!r}")
    return results


async def time_fixture(runs: int) -> list[float]:
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as directory:
            started = time.perf_counter()
            async with running_server(Path(directory)):
                results.append(time.perf_counter() - started)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    up = time_roost_up(args.runs)
    import uvloop

    fixture = uvloop.run(time_fixture(args.runs))
    print(
        "roost up to ready line (process start included): "
        f"median {statistics.median(up) * 1000:.0f} ms, "
        f"max {max(up) * 1000:.0f} ms over {args.runs} runs"
    )
    print(
        f"running_server() fixture start: median {statistics.median(fixture) * 1000:.1f} ms, "
        f"max {max(fixture) * 1000:.1f} ms over {args.runs} runs"
    )


if __name__ == "__main__":
    main()
