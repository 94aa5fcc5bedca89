"""``roost up`` as a user runs it: a real process, a ready line, a clean stop on a signal."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from roost.testing.rawclient import RawClient, client_context
from roost.xmpp import ns

READY = re.compile(
    rb"roost ready: localhost on c2s 127\.0\.0\.1:(\d+) \(STARTTLS\), c2s_tls 127\.0\.0\.1:(\d+)"
    rb" \(direct TLS\), websocket wss://127\.0\.0\.1:\d+/xmpp-websocket"
)


async def _start(data_dir: Path) -> tuple[asyncio.subprocess.Process, int, int]:
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
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    match = READY.search(line)
    assert match, line
    return process, int(match.group(1)), int(match.group(2))


async def test_up_prints_a_ready_line_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    process, port, tls_port = await _start(data_dir)
    try:
        # The first start created the store and a self-signed certificate.
        assert (data_dir / "roost.db").exists()
        assert (data_dir / "tls" / "cert.pem").exists()
        assert (data_dir / "tls" / "key.pem").stat().st_mode & 0o077 == 0
        client = await RawClient.connect("127.0.0.1", port)
        features = await client.open_stream()
        assert features.find("starttls", ns.TLS) is not None
        direct = await RawClient.connect(
            "127.0.0.1", tls_port, tls=client_context(data_dir / "tls" / "cert.pem")
        )
        features = await direct.open_stream()
        assert features.find("mechanisms", ns.SASL) is not None
        process.send_signal(signal.SIGTERM)
        assert await client.stream_error() == "system-shutdown"
        assert await client.closed()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_up_refuses_a_port_in_use_with_a_clear_message(tmp_path: Path) -> None:
    holder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = holder.sockets[0].getsockname()[1]
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "roost",
            "up",
            "--data-dir",
            str(tmp_path),
            "--c2s-port",
            str(port),
            "--c2s-tls-port",
            "-1",
            "--websocket-port",
            "-1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 1
        assert b"cannot start" in stderr
        assert b"address already in use" in stderr.lower()
    finally:
        holder.close()
