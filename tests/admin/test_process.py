"""The control plane of a real `roost up` process: ctl, shell from a pipe, SIGHUP, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

TIMEOUT = 30


async def start(data_dir: Path) -> asyncio.subprocess.Process:
    """`roost up` on free ports, once it printed its ready line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roost",
        "up",
        "--data-dir",
        str(data_dir),
        "--c2s-port",
        "0",
        "--c2s-tls-port",
        "0",
        "--websocket-port",
        "-1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
    assert line.startswith(b"roost ready: "), line
    return process


async def roost(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roost",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def log_line(stream: asyncio.StreamReader, text: str) -> str:
    """The first line of the node's log that contains ``text``."""
    async with asyncio.timeout(TIMEOUT):
        while line := (await stream.readline()).decode():
            if text in line:
                return line
    raise AssertionError(f"the node exited before logging {text!r}")


async def test_a_node_is_administered_reloaded_and_stopped_from_outside(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    process = await start(data_dir)
    where = ("--data-dir", str(data_dir))
    try:
        assert process.stderr is not None
        code, out, err = await roost("shell", *where, stdin=b"import os\nos.getpid()\n")
        assert (code, out.strip()) == (0, str(process.pid)), err

        (data_dir / "roost.toml").write_text("[limits]\noffline_messages = 12\n")
        process.send_signal(signal.SIGHUP)
        line = await log_line(process.stderr, "configuration version 2")
        assert "applied limits.offline_messages" in line
        code, out, _ = await roost("ctl", *where, "config", "get", "limits.offline_messages")
        assert out.strip() == f"limits.offline_messages = 12    # file ({data_dir}/roost.toml:2)"

        code, out, _ = await roost("ctl", *where, "stop")
        assert code == 0
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
        assert not (data_dir / "ctl.sock").exists()
        code, _, err = await roost("ctl", *where, "status")
        assert code == 3
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sighup_with_an_invalid_file_keeps_the_node_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    process = await start(data_dir)
    try:
        assert process.stderr is not None
        (data_dir / "roost.toml").write_text("[limits]\noffline_messages = 'many'\n")
        process.send_signal(signal.SIGHUP)
        line = await log_line(process.stderr, "reload refused")
        assert "nothing was changed" in line
        code, out, _ = await roost("ctl", "--data-dir", str(data_dir), "config", "status", "--json")
        assert code == 0
        assert '"version": 1' in out
    finally:
        os.kill(process.pid, signal.SIGTERM)
        await asyncio.wait_for(process.wait(), TIMEOUT)


async def test_config_set_through_one_node_process_applies_on_every_node(tmp_path: Path) -> None:
    from roost.testing.processes import process_cluster

    async with process_cluster(tmp_path, nodes=2) as nodes:
        first = ("--socket", str(tmp_path / "ctl-node1.sock"))
        code, out, err = await roost("ctl", *first, "config", "set", "mam.max_page", "42", "--json")
        assert code == 0, err
        assert '"node2": {\n    "ok": true' in out
        for node in nodes:
            assert await node.eval("server.config.mam_max_page") == 42
        second = ("--socket", str(tmp_path / "ctl-node2.sock"))
        code, out, err = await roost("ctl", *second, "--all", "config", "status")
        assert code == 0, err
        assert "the nodes are configured alike" in out
