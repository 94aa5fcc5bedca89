"""roost bench load against the in-box server: scenarios, counts, failures, CLI.

The API tests run the server and the generator in the same event loop; the CLI tests run the
server in a thread of its own, because the command starts its own loop. Runs are bounded by
message counts rather than time where possible, and nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.bench.load import LoadConfig, LoadResult, User, run_load
from roost.bench.load.cli import main
from roost.testing.server import RunningServer, running_server
from roost.xmpp.element import Element

PLAIN: dict[str, Any] = {
    "require_tls": False,
    "allow_plain_without_tls": True,
    "registration": True,
}


def _config(srv: RunningServer, **settings: Any) -> LoadConfig:
    base: dict[str, Any] = {
        "host": srv.host,
        "port": srv.port,
        "domain": srv.domain,
        "clients": 10,
        "duration": 30.0,
        "register": True,
        "drain": 10.0,
    }
    base.update(settings)
    return LoadConfig(**base)


def _assert_clean(result: LoadResult) -> None:
    assert result.ok, result.problems
    assert result.failed_phase is None
    assert result.errors == {}
    assert result.failures == {}
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.fixture
async def plain_server(tmp_path: Path) -> Any:
    async with running_server(tmp_path / "roost", **PLAIN) as srv:
        yield srv


# -- chat ------------------------------------------------------------------------------------


async def test_chat_with_stream_management_acknowledges_what_it_receives(
    plain_server: RunningServer,
) -> None:
    unacked_at_close: list[int] = []

    def closed(session: Any) -> None:
        assert session.sm is not None, "stream management was not enabled"
        unacked_at_close.append(len(session.sm.queue))

    plain_server.server.hooks.add("c2s.closed", closed)
    result = await run_load(
        _config(plain_server, clients=10, max_messages=500, stream_management=True)
    )
    _assert_clean(result)
    assert result.traffic["delivered"] == 500
    await plain_server.server.settle()
    assert len(unacked_at_close) == 10
    # The server asked for acks as it went and the clients answered: what was still
    # unacknowledged when they left is at most what was sent since the last request.
    assert max(unacked_at_close) <= 16


async def test_chat_closed_loop_delivers_every_message_once(plain_server: RunningServer) -> None:
    result = await run_load(_config(plain_server, clients=20, max_messages=2000, window=2))
    _assert_clean(result)
    traffic = result.traffic
    assert traffic["mode"] == "closed loop"
    assert traffic["sent"] == 2000
    assert traffic["delivered"] == 2000
    assert traffic["lost"] == 0
    assert traffic["duplicates"] == 0
    assert traffic["errors"] == 0
    assert traffic["delivered_per_s"] > 0
    assert result.latency is not None
    assert result.latency["count"] == 2000
    assert 0 < result.latency["p50_ms"] <= result.latency["p99_ms"] <= result.latency["max_ms"]
    assert result.clients["online"] == 20
    assert result.clients["registered"] == {"created": 20, "existing": 0}
    assert result.generator["cpu_share"]["run"] >= 0


async def test_chat_open_loop_delivers_all(plain_server: RunningServer) -> None:
    result = await run_load(_config(plain_server, rate=400.0, duration=0.5))
    _assert_clean(result)
    traffic = result.traffic
    assert traffic["mode"] == "open loop"
    assert traffic["sent"] > 0
    assert traffic["delivered"] == traffic["sent"]
    assert traffic["lost"] == 0
    assert traffic["pacer"]["target_rate"] == 400.0
    assert traffic["pacer"]["achieved_rate"] > 0


async def test_registration_then_existing_users(plain_server: RunningServer) -> None:
    first = await run_load(_config(plain_server, user_prefix="reg", max_messages=50))
    _assert_clean(first)
    assert first.clients["registered"] == {"created": 10, "existing": 0}
    assert await plain_server.server.storage.user_exists(f"reg9@{plain_server.domain}")
    second = await run_load(_config(plain_server, user_prefix="reg", max_messages=50))
    _assert_clean(second)
    assert second.clients["registered"] == {"created": 0, "existing": 10}
    assert second.traffic["delivered"] == 50


async def test_starttls_with_certificate_verification(tmp_path: Path) -> None:
    async with running_server(tmp_path / "roost", registration=True) as srv:  # TLS required
        config = _config(srv, starttls=True, verify=True, cafile=str(srv.cert), max_messages=200)
        result = await run_load(config)
        _assert_clean(result)
        assert result.transport == "STARTTLS"
        assert result.traffic["delivered"] == 200

        direct = _config(srv, port=srv.tls_port, direct_tls=True, register=False, max_messages=50)
        result = await run_load(direct)
        _assert_clean(result)
        assert result.traffic["delivered"] == 50


async def test_tls_required_but_not_used_is_a_clear_failure(tmp_path: Path) -> None:
    async with running_server(tmp_path / "roost", registration=True) as srv:
        result = await run_load(_config(srv, register=False, clients=3))
    assert not result.ok
    assert result.failed_phase == "auth"
    (reason,) = result.failures["auth"]
    assert "requires TLS" in reason


async def test_scram_when_plain_is_not_offered(tmp_path: Path) -> None:
    async with running_server(tmp_path / "roost", require_tls=False, registration=True) as srv:
        for name in ("alice", "bob"):
            await srv.create_user(name, "pw")
        users = [User("alice", "pw"), User("bob", "pw")]
        config = _config(srv, users=users, clients=2, register=False, max_messages=20)
        result = await run_load(config)
    _assert_clean(result)
    assert result.traffic["delivered"] == 20


# -- idle and presence -----------------------------------------------------------------------


async def test_idle_reports_server_memory(plain_server: RunningServer) -> None:
    config = _config(plain_server, scenario="idle", duration=0.2, server_pid=os.getpid())
    result = await run_load(config)
    _assert_clean(result)
    assert result.traffic == {}
    assert result.clients["online"] == 10
    assert result.clients["login_per_s"] > 0
    assert result.server is not None
    rss = result.server["rss"]
    assert rss["before_bytes"] > 0
    assert rss["after_login_bytes"] > 0
    assert rss["end_bytes"] > 0
    assert isinstance(rss["per_session_bytes"], int)


async def test_presence_fan_out(plain_server: RunningServer) -> None:
    config = _config(plain_server, scenario="presence", clients=6, roster_size=4, max_messages=60)
    result = await run_load(config)
    _assert_clean(result)
    traffic = result.traffic
    assert traffic["changes"] == 60
    assert traffic["expected"] == 240
    assert traffic["delivered"] == 240
    assert traffic["lost"] == 0
    assert traffic["duplicates"] == 0
    assert traffic["extra"] == 0
    assert traffic["fanout_latency"]["count"] == 60
    # A second run finds the subscriptions in place (the server ignores a new 'subscribed').
    again = await run_load(config)
    _assert_clean(again)
    assert again.traffic["delivered"] == 240


async def test_presence_timeout_bounds_the_wait_for_an_echo(plain_server: RunningServer) -> None:
    """A server that never sends a client's initial presence back (PyJabber) delays the start
    by presence_timeout, not setup_timeout, and the result says so."""

    def swallow(stanza: Element, session: Any) -> Element | None:
        broadcast = stanza.name == "presence" and stanza.get("to") is None
        return None if broadcast else stanza

    config = _config(plain_server, setup_timeout=60.0, presence_timeout=0.3, max_messages=20)
    assert config.presence_wait == 0.3
    plain_server.server.hooks.add("c2s.inbound", swallow, priority=1)
    result = await run_load(config)
    assert result.durations["setup"] < 5
    assert result.traffic["delivered"] == 20
    assert any(
        "did not see their initial presence handled within 0.3 s" in w for w in result.warnings
    )


async def test_presence_set_up_learns_approvals_from_roster_pushes(
    plain_server: RunningServer,
) -> None:
    """A server that tells the subscriber of an approval by a roster push only (PyJabber, at
    times) still gets the rosters set up."""

    def no_subscribed(stanza: Element, session: Any) -> Element | None:
        return None if stanza.name == "presence" and stanza.get("type") == "subscribed" else stanza

    plain_server.server.hooks.add("c2s.outbound", no_subscribed, priority=1)
    config = _config(
        plain_server,
        scenario="presence",
        clients=6,
        roster_size=4,
        max_messages=30,
        setup_timeout=10,
    )
    result = await run_load(config)
    _assert_clean(result)
    assert result.traffic["delivered"] == 120


# -- failures --------------------------------------------------------------------------------


async def test_wrong_password_fails_in_auth(plain_server: RunningServer) -> None:
    await run_load(_config(plain_server, clients=3, max_messages=3))  # creates the users
    result = await run_load(_config(plain_server, clients=3, register=False, password="nope"))
    assert not result.ok
    assert result.failed_phase == "auth"
    assert result.failures == {"auth": {"SASL failure: not-authorized": 3}}
    assert result.clients["online"] == 0
    assert "the scenario was not run" in result.problems
    assert result.exit_code == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_target_stops_early() -> None:
    config = LoadConfig("127.0.0.1", _closed_port(), "localhost", clients=50, connect_concurrency=5)
    result = await run_load(config)
    assert not result.ok
    assert result.failed_phase == "connect"
    assert result.failures == {"connect": {"Connection refused": 5}}
    assert any("45 clients not attempted" in problem for problem in result.problems)


async def test_server_going_away_mid_run(plain_server: RunningServer) -> None:
    server = plain_server.server
    seen = 0
    stopping: list[asyncio.Task[None]] = []

    def count(stanza: Element, session: Any) -> Element:
        nonlocal seen
        if stanza.name == "message":
            seen += 1
            if seen == 300:
                stopping.append(asyncio.get_running_loop().create_task(server.stop()))
        return stanza

    server.hooks.add("c2s.inbound", count, priority=1)
    result = await run_load(_config(plain_server, duration=60.0))
    await asyncio.gather(*stopping)
    assert not result.ok
    assert result.failed_phase == "run"
    assert result.clients["disconnected"] == 10
    assert result.errors["disconnected: stream error: system-shutdown"] == 10
    assert result.traffic["delivered"] >= 250  # partial results are kept
    assert result.traffic["sent"] == result.traffic["delivered"] + result.traffic["lost"]
    assert any("10 clients disconnected" in problem for problem in result.problems)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"scenario": "idle", "rate": 10.0}, "rate"),
        ({"rate": 10.0, "window": 2}, "window"),
        ({"scenario": "presence", "clients": 10, "roster_size": 3}, "even"),
        ({"scenario": "presence", "clients": 4, "roster_size": 4}, "smaller"),
        ({"starttls": True, "direct_tls": True}, "one of"),
        ({"clients": 1}, "at least 2"),
        ({"verify": True}, "need starttls"),
        ({"presence_timeout": 0.0}, "presence_timeout"),
    ],
)
def test_config_checks(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadConfig("127.0.0.1", 5222, "localhost", **settings).check()


# -- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def threaded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server in a thread with its own event loop, for the blocking CLI to talk to."""
    ready = threading.Event()
    state: dict[str, Any] = {}
    path = tmp_path_factory.mktemp("cli") / "roost"

    async def serve() -> None:
        async with running_server(path, **PLAIN) as srv:
            state["server"], state["loop"] = srv, asyncio.get_running_loop()
            state["stop"] = asyncio.Event()
            ready.set()
            await state["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield state["server"]
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(30)


def _cli(srv: RunningServer, *args: str) -> list[str]:
    return ["--target", f"{srv.host}:{srv.port}", "--domain", srv.domain, "--no-progress", *args]


def test_cli_json(threaded_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _cli(threaded_server, "--register", "--clients", "5", "--max-messages", "100", "--json")
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert document["scenario"] == "chat"
    assert document["traffic"]["delivered"] == 100
    assert document["parameters"]["clients"] == 5
    assert set(document["latency"]) >= {"p50_ms", "p90_ms", "p99_ms", "max_ms"}
    assert "run" in document["generator"]["cpu_share"]


def test_cli_text_report(
    threaded_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _cli(threaded_server, "--register", "--scenario", "idle", "--duration", "0.1")
    assert main([*argv, "--clients", "3", "--user-prefix", "text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("roost bench load: idle, 3 clients")
    assert "3/3 online" in out


def test_cli_refused_login(
    threaded_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(threaded_server, "--register", "--clients", "2", "--max-messages", "2")) == 0
    capsys.readouterr()
    argv = _cli(threaded_server, "--clients", "2", "--password", "wrong", "--json")
    assert main(argv) == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["failed_phase"] == "auth"
    assert document["failures"]["auth"] == {"SASL failure: not-authorized": 2}
    assert "failed in phase auth" in captured.err


def test_cli_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--target", f"127.0.0.1:{_closed_port()}", "--clients", "3", "--no-progress"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED in phase connect" in out
    assert "Connection refused" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "nowhere"], "HOST:PORT"),
        (["--target", "h:99999"], "out of range"),
        (["--target", "h:1", "--clients", "0"], "at least 1"),
        (["--target", "h:1", "--scenario", "idle", "--rate", "5"], "--rate"),
        (["--target", "h:1", "--tls", "--direct-tls"], "--tls"),
        (["--target", "h:1", "--scenario", "presence", "--roster-size", "3"], "--roster-size"),
        (["--target", "h:1", "--users-from", "/nonexistent/users.txt"], "--users-from"),
        (["--target", "h:1", "--server-pid", "999999999"], "--server-pid"),
        (["--scenario", "chat"], "--target"),
    ],
)
def test_cli_argument_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_users_file(
    threaded_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = tmp_path / "users.txt"
    users.write_text(
        f"# prepared accounts\nfile0@{threaded_server.domain} pw0\nfile1 pw1\n", encoding="utf-8"
    )
    argv = _cli(threaded_server, "--users-from", str(users), "--register", "--max-messages", "10")
    assert main([*argv, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["clients"]["online"] == 2
    assert document["traffic"]["delivered"] == 10
