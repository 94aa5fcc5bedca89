"""Hot reload: runtime settings reach the live node, bad configurations change nothing."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from roost.admin import reload
from roost.c2s.state import State
from roost.c2s.tls import ensure_self_signed
from roost.config import ServerConfig
from roost.core.server import Server
from roost.testing import RunningServer
from roost.testing.rawclient import RawClient, client_context
from tests.admin.conftest import Ctl
from tests.admin.test_ctl import PING, online


def write_config(server: RunningServer, text: str) -> None:
    (server.data_dir / "roost.toml").write_text(text)


async def test_reload_applies_a_changed_limit_to_live_connections(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    waiting = await RawClient.connect(roost_server.host, roost_server.port)
    await waiting.open_stream()  # connected, never authenticates
    [listener] = [x for x in roost_server.server.listeners if x.kind == "c2s"]
    [session] = listener.sessions()
    soon = asyncio.get_running_loop().time() + 5
    listener.sweep(soon)
    assert session.state is not State.CLOSED  # 5 s is within the default 30 s

    write_config(roost_server, "[limits]\nauth_timeout = 2\n")
    result = await ctl("config", "reload", "--json")
    assert result.code == 0, result.err
    assert result.json["changed"] == {"limits.auth_timeout": ["30.0", "2.0"]}
    assert result.json["applied"] == ["limits.auth_timeout"]
    assert result.json["restart_needed"] == []
    assert result.json["version"] == 2

    listener.sweep(soon)
    assert await waiting.stream_error() == "connection-timeout"


async def test_a_lower_stanza_limit_applies_to_live_streams(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    await roost_server.create_user("alice")
    client = await online(roost_server, "alice", "phone")  # connected before the change
    assert (await ctl("config", "set", "limits.max_stanza_size", "4096")).code == 0
    await client.send(
        b"<message to='alice@localhost'><body>" + b"x" * 10_000 + b"</body></message>"
    )
    assert await client.stream_error() == "policy-violation"


async def test_an_invalid_configuration_changes_nothing(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    running = roost_server.server.config
    write_config(roost_server, "[limits]\noffline_messages = -1\nofline = 3\n")
    result = await ctl("config", "reload")
    assert result.code == 1
    assert "nothing was changed" in result.err
    assert "limits.offline_messages: must be at least 0, got -1" in result.err
    assert "unknown setting 'limits.ofline'" in result.err
    assert roost_server.server.config is running
    assert roost_server.server.config_version == 1


async def test_a_bad_certificate_rolls_the_whole_reload_back(
    roost_server: RunningServer, ctl: Ctl, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    server = roost_server.server
    context, running = server.tls_context, server.config
    write_config(
        roost_server,
        f'[limits]\noffline_messages = 7\n[tls]\ncert = "{bad}"\nkey = "{bad}"\n',
    )
    result = await ctl("config", "reload", "--json")
    assert result.code == 1
    error = result.json["error"]
    assert error["code"] == "reload-failed"
    assert f"tls.cert {bad}" in error["message"]
    assert server.tls_context is context
    assert server.config is running
    assert server.config.offline_limit == 1000
    assert server.config_version == 1
    # New clients still get the old certificate.
    client = await RawClient.connect(roost_server.host, roost_server.port)
    await client.open_stream()
    await client.starttls(client_context(roost_server.cert))
    await client.close()


def _der(path: Path) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


async def test_a_new_certificate_serves_new_connections_on_both_ports(
    roost_server: RunningServer, ctl: Ctl, tmp_path: Path
) -> None:
    await roost_server.create_user("alice")
    before = await online(roost_server, "alice", "before")
    cert, key = ensure_self_signed(tmp_path / "renewed", "localhost")
    write_config(roost_server, f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    result = await ctl("config", "reload", "--json")
    assert result.code == 0, result.err
    assert set(result.json["applied"]) == {"tls.cert", "tls.key"}

    _, writer = await asyncio.open_connection(
        roost_server.host,
        roost_server.tls_port,
        ssl=client_context(cert),
        server_hostname="localhost",
    )
    tls: Any = writer.get_extra_info("ssl_object")
    assert tls.getpeercert(binary_form=True) == _der(cert)
    writer.close()
    starttls = await RawClient.connect(roost_server.host, roost_server.port)
    await starttls.open_stream()
    await starttls.starttls(client_context(cert))  # verifies against the new certificate
    await starttls.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        await RawClient.connect(
            roost_server.host, roost_server.tls_port, tls=client_context(roost_server.cert)
        )
    # A connection made before the reload carries on.
    await before.send(PING)
    assert (await before.expect("iq")).attrs["type"] == "result"
    await before.close()


async def test_a_failing_step_undoes_the_steps_before_it(
    roost_server: RunningServer, ctl: Ctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(reload, "_STEPS", [*reload._STEPS, broken])
    server = roost_server.server
    context, running, auth = server.tls_context, server.config, server.auth
    level = logging.getLogger("roost").level
    write_config(
        roost_server,
        '[server]\nlog_level = "error"\n[auth]\nscram_iterations = 5000\n'
        "[limits]\noffline_messages = 7\n",
    )
    result = await ctl("config", "reload")
    assert result.code == 1
    assert "the disk is on fire" in result.err
    assert server.tls_context is context
    assert server.config is running
    assert server.auth is auth
    assert logging.getLogger("roost").level == level
    assert server.config_version == 1


async def test_log_level_and_scram_iterations_apply_at_once(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    logger = logging.getLogger("roost")
    level = logger.level
    try:
        assert (await ctl("config", "set", "server.log_level", "error")).code == 0
        assert logger.level == logging.ERROR
        assert (await ctl("config", "set", "auth.scram_iterations", "5000")).code == 0
        jid = await roost_server.create_user("alice")
        stored = await roost_server.server.storage.get_credentials(jid, "SCRAM-SHA-256")
        assert stored is not None
        assert stored.iterations == 5000
    finally:
        logger.setLevel(level)


async def test_a_reload_without_changes_keeps_the_version(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    result = await ctl("config", "reload")
    assert result.code == 0
    assert result.out.startswith("no changes (config version 1)")
    assert roost_server.server.config_version == 1


async def test_a_setting_needing_a_restart_is_reported_not_applied(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    write_config(roost_server, '[server]\ndomain = "example.org"\n[limits]\noffline_messages = 3\n')
    result = await ctl("config", "reload")
    assert result.code == 0
    assert result.out.splitlines() == [
        "config version 2",
        "  server.domain: localhost -> example.org (restart needed)",
        "  limits.offline_messages: 1000 -> 3 (applied)",
    ]
    assert roost_server.server.config.offline_limit == 3
    assert roost_server.server.config.domain == "localhost"


async def test_a_server_made_from_a_plain_config_reloads_from_its_data_dir(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "roost"
    config = ServerConfig(
        data_dir=data_dir, c2s_port=0, c2s_tls_port=-1, websocket_port=-1, offline_limit=9
    )
    server = Server(config)
    await server.start()
    try:
        (data_dir / "roost.toml").write_text("[limits]\nresume_timeout = 10\n")
        report = await reload.reload(server)
        assert report.applied == ["limits.resume_timeout"]
        assert server.config.sm_timeout == 10
        assert server.config.offline_limit == 9  # what it was given still holds
    finally:
        await server.stop()
