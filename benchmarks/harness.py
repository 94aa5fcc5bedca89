"""Shared plumbing for the server benchmarks: start a server pinned to one core, run the load
generator pinned to the other, collect its JSON.

The machine these run on has two cores. The server under test gets core 0 and the load
generator core 1 (``taskset``), so that figures are per server core and comparable between
servers. Results go to docs/benchmarks.md with the command that produced them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVER_CORE = "0"
LOAD_CORE = "1"
ROOT = Path(__file__).resolve().parent.parent


def taskset(core: str) -> list[str]:
    return ["taskset", "-c", core] if shutil.which("taskset") and os.cpu_count() != 1 else []


@dataclass
class Server:
    """A server process under test."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    domain: str = "localhost"

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def roost_command(data_dir: Path, port: int, *, pinned: bool = True) -> list[str]:
    """``roost up`` as every benchmark runs it: plaintext logins allowed and registration open
    (benchmarks measure XMPP, not TLS set-up), no direct TLS or WebSocket listener."""
    return [
        *(taskset(SERVER_CORE) if pinned else []),
        sys.executable,
        "-m",
        "roost",
        "up",
        "--data-dir",
        str(data_dir),
        "--c2s-port",
        str(port),
        "--c2s-tls-port",
        "-1",
        "--websocket-port",
        "-1",
        "--allow-plaintext",
        "--registration",
        "--log-level",
        "warning",
    ]


def start_roost(
    data_dir: Path, port: int = 15222, *, extra: list[str] | None = None, pinned: bool = True
) -> Server:
    """Start ``roost up`` (:func:`roost_command`) and wait for its ready line."""
    command = [*roost_command(data_dir, port, pinned=pinned), *(extra or [])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    match = re.search(r"c2s [\d.]+:(\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"roost did not start: {line!r}")
    return Server("roost", process, int(match.group(1)))


def load(server: Server, *args: str, timeout: float = 900, pinned: bool = True) -> dict[str, Any]:
    """Run ``roost bench load`` against ``server`` on the load core; return its JSON."""
    command = [
        *(taskset(LOAD_CORE) if pinned else []),
        sys.executable,
        "-m",
        "roost.bench.load",
        "--target",
        f"127.0.0.1:{server.port}",
        "--domain",
        server.domain,
        "--server-pid",
        str(server.pid),
        "--no-progress",
        "--json",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, timeout=timeout, cwd=ROOT)
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"load generator failed ({done.returncode}): {done.stderr.decode()[-2000:]}"
        ) from None
    return result


_PROGRESS = re.compile(r"\[\s*(\w+)\].* delivered (\d+)")


def steady_load(
    server: Server, cpu: Callable[[], tuple[float, ...]], *args: str, pinned: bool = True
) -> tuple[dict[str, Any], int, tuple[float, ...]]:
    """Run ``roost bench load`` with progress lines; its JSON, and the steady part of the run:
    messages delivered, and how much each of the ``cpu()`` readings grew meanwhile.

    ``cpu()`` is read at each of the generator's progress lines (one a second) of the ``run``
    phase, so that logging in (password hashing) and the drain at the end are left out: per
    message, the figures are those of the steady state.
    """
    command = [
        *(taskset(LOAD_CORE) if pinned else []),
        sys.executable, "-m", "roost.bench.load",
        "--target", f"127.0.0.1:{server.port}", "--domain", server.domain,
        "--server-pid", str(server.pid), "--progress", "--json", *args,
    ]  # fmt: skip
    samples: list[tuple[int, tuple[float, ...]]] = []
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.PIPE, cwd=ROOT, text=True
        )
        assert process.stderr is not None
        for line in process.stderr:
            match = _PROGRESS.match(line)
            if match and match.group(1) == "run":
                samples.append((int(match.group(2)), cpu()))
        process.wait()
        output.seek(0)
        text = output.read().decode()
    try:
        result: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        raise RuntimeError(f"load generator failed ({process.returncode})") from None
    if len(samples) < 2:
        raise RuntimeError("the run was too short for two progress lines")
    (first, before), (last, after) = samples[0], samples[-1]
    return result, max(1, last - first), tuple(b - a for a, b in zip(before, after, strict=True))


def ensure_users(server: Server, count: int) -> None:
    """Register load0..load{count-1} (already existing ones are fine)."""
    result = load(
        server,
        "--scenario",
        "idle",
        "--clients",
        str(count),
        "--duration",
        "0.1",
        "--register",
        "--no-initial-presence",
    )
    if result["clients"]["online"] != count:
        raise RuntimeError(f"could not log {count} users in: {result.get('problems')}")


def wait(seconds: float) -> None:
    time.sleep(seconds)
