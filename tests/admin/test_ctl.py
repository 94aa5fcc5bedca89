"""`roost ctl` against a running node: every command, human and JSON output, exit codes."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from roost.admin import channel
from roost.admin.channel import NodeRunning, peer_allowed
from roost.admin.client import ControlClient, RemoteError
from roost.testing import RunningServer, running_server
from roost.testing.rawclient import RawClient
from roost.xmpp import ns
from tests.admin.conftest import Ctl, run_cli

PING = "<iq type='get' id='ping' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


async def online(
    server: RunningServer,
    user: str,
    resource: str,
    available: bool = True,
    password: str = "secret",
) -> RawClient:
    """A logged-in client; available (initial presence handled) unless told otherwise."""
    client = await RawClient.logged_in(
        server.host, server.port, user, password, cert=server.cert, resource=resource
    )
    if available:
        await client.send("<presence/>")
    await client.send(PING)  # handled in order: once answered, the presence was too
    while (await client.expect("iq")).attrs.get("id") != "ping":
        pass
    return client


# -- status, nodes, sessions -------------------------------------------------------------------


async def test_status_reports_sessions_and_counts_messages(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    alice = await online(roost_server, "alice", "phone")
    bob = await online(roost_server, "bob", "laptop")
    await alice.send("<message to='bob@localhost' type='chat'><body>hi</body></message>")
    await bob.expect("message")

    result = await ctl("status", "--json")
    assert result.code == 0, result.err
    status = result.json
    assert status["sessions"] == 2
    assert status["users_online"] == 2
    assert status["connections"] == 2
    assert status["messages_total"] == 1
    assert status["stanzas_total"] >= 5  # two presences, two pings, one message
    assert status["pid"] == os.getpid()
    assert status["memory_rss"] > 1024 * 1024
    assert status["config_version"] == 1
    assert status["loop_lag_ms"] is None or status["loop_lag_ms"] >= 0

    human = await ctl("status")
    assert human.code == 0
    lines = dict(line.split(None, 1) for line in human.out.splitlines() if line[0] != " ")
    assert lines["sessions"].strip() == "2 (2 users online)"
    assert "memory (RSS)" in human.out
    assert "event-loop lag" in human.out
    await alice.close()
    await bob.close()


async def test_nodes_lists_this_node(ctl: Ctl) -> None:
    result = await ctl("nodes", "--json")
    assert result.code == 0
    [node] = result.json
    assert node["self"] is True
    assert node["name"] == socket.gethostname()
    assert (node["link"], node["sessions"], node["pid"]) == ("self", 0, os.getpid())
    human = await ctl("nodes")
    header, row = human.out.splitlines()
    assert header.split() == [
        "NODE", "ADDRESS", "LINK", "RTT", "SESSIONS", "PID", "VERSION", "UPTIME"
    ]  # fmt: skip
    assert row.split()[:7] == ["*", socket.gethostname(), "-", "self", "-", "0", str(os.getpid())]


async def test_sessions_shows_each_session_and_filters_by_user(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    await roost_server.create_user("alice")
    await roost_server.create_user("bob")
    phone = await online(roost_server, "alice", "phone")
    laptop = await online(roost_server, "alice", "laptop", available=False)
    bob = await online(roost_server, "bob", "desk")

    everyone = await ctl("sessions", "--json")
    assert [s["jid"] for s in everyone.json] == [
        "alice@localhost/laptop",
        "alice@localhost/phone",
        "bob@localhost/desk",
    ]
    only_alice = await ctl("sessions", "--user", "alice@localhost", "--json")
    laptop_row, phone_row = only_alice.json
    assert phone_row["available"] is True
    assert laptop_row["available"] is False
    assert phone_row["ip"] == "127.0.0.1"
    assert phone_row["tls"] in ("TLSv1.2", "TLSv1.3")
    assert phone_row["sm"] == "off"
    assert phone_row["priority"] == 0
    assert phone_row["idle"] >= 0
    one = await ctl("sessions", "--user", "alice@localhost/phone", "--json")
    assert [s["jid"] for s in one.json] == ["alice@localhost/phone"]

    table = (await ctl("sessions")).out.splitlines()
    assert table[0].split() == ["JID", "IP", "TLS", "AVAILABLE", "PRIORITY", "SM", "IDLE"]
    assert table[2].split()[:4] == ["alice@localhost/phone", "127.0.0.1", phone_row["tls"], "yes"]
    for client in (phone, laptop, bob):
        await client.close()


async def test_sessions_of_nobody_is_an_empty_list(ctl: Ctl) -> None:
    assert (await ctl("sessions", "--json")).json == []
    assert (await ctl("sessions")).out.strip() == "(none)"


# -- kick ---------------------------------------------------------------------------------------


async def test_kick_a_full_jid_ends_that_session_with_policy_violation(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    await roost_server.create_user("alice")
    phone = await online(roost_server, "alice", "phone")
    laptop = await online(roost_server, "alice", "laptop")

    result = await ctl("kick", "alice@localhost/phone", "--reason", "spam", "--json")
    assert result.code == 0, result.err
    assert result.json == ["alice@localhost/phone"]
    error = await phone.expect("error", ns.STREAM)
    assert error.find("policy-violation", ns.STREAMS) is not None
    assert error.find_text("text", ns.STREAMS) == "spam"
    assert await phone.closed()
    # The other resource is untouched.
    await laptop.send(PING)
    assert (await laptop.expect("iq")).attrs["type"] == "result"
    await laptop.close()


async def test_kick_a_bare_jid_ends_every_session_of_the_user(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    await roost_server.create_user("alice")
    clients = [await online(roost_server, "alice", r) for r in ("a", "b")]
    result = await ctl("kick", "alice@localhost")
    assert result.code == 0
    assert result.out.splitlines() == ["kicked alice@localhost/a", "kicked alice@localhost/b"]
    for client in clients:
        assert await client.stream_error() == "policy-violation"


async def test_kick_nobody_fails_with_exit_code_1(ctl: Ctl) -> None:
    result = await ctl("kick", "nobody@localhost")
    assert result.code == 1
    assert "no session of nobody@localhost" in result.err
    as_json = await ctl("kick", "nobody@localhost", "--json")
    assert as_json.code == 1
    assert as_json.json["error"]["code"] == "not-found"


# -- users --------------------------------------------------------------------------------------


async def test_user_commands_change_accounts_on_the_live_server(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    added = await ctl("user", "add", "carol@localhost", "--password", "first")
    assert (added.code, added.out.strip()) == (0, "created carol@localhost")
    carol = await online(roost_server, "carol", "x", password="first")
    await carol.close()

    assert (await ctl("user", "add", "carol@localhost", "--password", "x")).code == 1
    assert (await ctl("user", "list", "--json")).json == ["carol@localhost"]
    assert (await ctl("user", "list")).out.strip() == "carol@localhost"

    changed = await ctl("user", "passwd", "carol@localhost", "--password", "second", "--json")
    assert changed.json == {"jid": "carol@localhost"}
    assert await roost_server.server.auth.verify_plain("carol@localhost", "second")
    assert not await roost_server.server.auth.verify_plain("carol@localhost", "first")

    online_carol = await online(roost_server, "carol", "y", password="second")
    deleted = await ctl("user", "del", "carol@localhost", "--json")
    assert deleted.json == {"jid": "carol@localhost", "kicked": ["carol@localhost/y"]}
    assert await online_carol.stream_error() == "policy-violation"
    assert not await roost_server.server.storage.user_exists("carol@localhost")
    assert (await ctl("user", "del", "carol@localhost")).code == 1
    assert (await ctl("user", "passwd", "carol@localhost", "--password", "x")).code == 1


async def test_user_add_reads_the_password_from_stdin_when_not_given(
    roost_server: RunningServer, ctl: Ctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from-stdin\n"))
    assert (await ctl("user", "add", "dave@localhost")).code == 0
    assert await roost_server.server.auth.verify_plain("dave@localhost", "from-stdin")


async def test_user_add_refuses_a_bad_jid_with_exit_code_2(ctl: Ctl) -> None:
    for jid in ("not a jid@", "localhost", "eve@elsewhere.example", "eve@localhost/res"):
        result = await ctl("user", "add", jid, "--password", "x")
        assert result.code == 2, (jid, result)


# -- config ---------------------------------------------------------------------------------------


async def test_config_get_shows_the_value_and_its_origin(ctl: Ctl) -> None:
    one = await ctl("config", "get", "limits.offline_messages", "--json")
    assert one.json["value"] == "1000"
    assert one.json["layer"] == "default"
    assert one.json["runtime"] is True
    port = await ctl("config", "get", "c2s.port")
    assert port.out.strip() == "c2s.port = 0    # flag (code)"
    everything = (await ctl("config", "get", "--json")).json
    assert "admin.eval_timeout" in {row["key"] for row in everything}
    assert (await ctl("config", "get", "limits.offline_mesages")).code == 2


async def test_config_set_applies_a_runtime_setting_at_once(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    result = await ctl("config", "set", "limits.offline_messages", "5", "--json")
    assert result.code == 0, result.err
    assert result.json["applied"] is True
    assert result.json["restart_needed"] is False
    assert result.json["version"] == 2
    assert roost_server.server.config.offline_limit == 5
    assert roost_server.server.config_version == 2
    overrides = (roost_server.data_dir / "overrides.toml").read_text()
    assert "offline_messages = 5" in overrides
    origin = (await ctl("config", "get", "limits.offline_messages", "--json")).json
    assert origin["layer"] == "override"

    human = await ctl("config", "set", "limits.offline_messages", "6")
    assert human.out.startswith("limits.offline_messages = 6 (applied now; kept in ")


async def test_config_set_of_a_restart_setting_is_kept_for_the_next_start(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    result = await ctl("config", "set", "server.domain", "example.org", "--json")
    assert result.code == 0
    assert result.json["restart_needed"] is True
    assert result.json["value"] == "example.org"
    assert roost_server.server.config.domain == "localhost"  # still running with the old one
    status = (await ctl("config", "status", "--json")).json
    assert status["pending_restart"] == {"server.domain": ["localhost", "example.org"]}
    assert status["overrides"] == {"server.domain": "example.org"}
    human = await ctl("config", "status")
    assert "restart needed  server.domain (localhost -> example.org)" in human.out
    get = await ctl("config", "get", "server.domain")
    assert "[after restart: example.org]" in get.out


async def test_config_set_refuses_invalid_values_with_exit_code_2(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    below = await ctl("config", "set", "limits.max_stanza_size", "10")
    assert below.code == 2
    assert "must be at least 1024, got 10" in below.err
    assert (await ctl("config", "set", "limits.offline_mesages", "1")).code == 2
    assert (await ctl("config", "set", "server.data_dir", "/tmp")).code == 2
    assert not (roost_server.data_dir / "overrides.toml").exists()
    assert roost_server.server.config_version == 1


async def test_config_unset_removes_the_override(roost_server: RunningServer, ctl: Ctl) -> None:
    await ctl("config", "set", "limits.offline_messages", "5")
    result = await ctl("config", "unset", "limits.offline_messages", "--json")
    assert result.code == 0
    assert result.json["value"] == "1000"
    assert roost_server.server.config.offline_limit == 1000
    assert (await ctl("config", "unset", "limits.offline_messages")).code == 1


async def test_a_runtime_override_survives_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "roost"
    async with running_server(data_dir) as first:
        argv = ["ctl", "--socket", str(first.socket), "config", "set"]
        assert (await run_cli(capsys, [*argv, "limits.offline_messages", "7"])).code == 0
        assert (await run_cli(capsys, [*argv, "limits.hibernate_after", "2.5"])).code == 0
    async with running_server(data_dir) as second:
        assert second.server.config.offline_limit == 7
        assert second.server.config.hibernate_after == 2.5
        assert second.server.loaded is not None
        assert second.server.loaded.origin("limits.offline_messages").layer == "override"


# -- stop -----------------------------------------------------------------------------------------


async def test_stop_shuts_the_node_down_and_returns_once_it_stopped(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    await roost_server.create_user("alice")
    alice = await online(roost_server, "alice", "phone")
    result = await ctl("stop", "--json")
    assert result.code == 0
    assert result.json["stopping"] is True
    assert await alice.stream_error() == "system-shutdown"
    await asyncio.wait_for(roost_server.server.wait_stopped(), 10)
    assert not roost_server.socket.exists()
    assert (await ctl("status")).code == 3


# -- reaching the node, exit codes --------------------------------------------------------------


async def test_no_node_running_is_exit_code_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await run_cli(capsys, ["ctl", "--data-dir", str(tmp_path), "status"])
    assert result.code == 3
    assert "no node is running here" in result.err
    as_json = await run_cli(capsys, ["ctl", "--data-dir", str(tmp_path), "--json", "status"])
    assert as_json.code == 3
    assert as_json.json["error"]["code"] == "unreachable"
    # A socket left behind by a node that died.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "ctl.sock"))
    stale.close()
    left = await run_cli(capsys, ["ctl", "--data-dir", str(tmp_path), "status"])
    assert left.code == 3
    assert "left over" in left.err


async def test_bad_arguments_are_exit_code_2(ctl: Ctl) -> None:
    missing = await ctl("kick")
    assert missing.code == 2
    assert "the following arguments are required: JID" in missing.err
    unknown = await ctl("statsu")
    assert unknown.code == 2
    assert "invalid choice: 'statsu'" in unknown.err
    assert (await ctl("config", "frobnicate")).code == 2


async def test_options_go_before_or_after_the_command(
    roost_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    socket_path = str(roost_server.socket)
    before = await run_cli(capsys, ["ctl", "--socket", socket_path, "--json", "nodes"])
    after = await run_cli(capsys, ["ctl", "nodes", "--json", "--socket", socket_path])
    assert before.code == after.code == 0
    assert before.json[0]["pid"] == after.json[0]["pid"]


async def test_the_socket_is_found_from_the_data_dir(
    roost_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await run_cli(capsys, ["ctl", "--data-dir", str(roost_server.data_dir), "nodes"])
    assert result.code == 0


# -- the socket and who may use it ------------------------------------------------------------


async def test_the_socket_is_private_to_the_node_user(roost_server: RunningServer) -> None:
    mode = roost_server.socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_only_the_node_user_and_root_pass_the_peer_check() -> None:
    assert peer_allowed(1000, node_uid=1000)
    assert peer_allowed(0, node_uid=1000)
    assert not peer_allowed(1001, node_uid=1000)
    assert peer_allowed(os.geteuid())


async def test_a_peer_failing_the_check_is_refused(
    roost_server: RunningServer, ctl: Ctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channel, "peer_allowed", lambda uid: False)

    def attempt() -> None:
        with ControlClient.connect(roost_server.socket) as client:
            client.request("status")

    with pytest.raises(RemoteError) as refused:
        await asyncio.to_thread(attempt)
    assert refused.value.code == "forbidden"
    result = await ctl("status")
    assert result.code == 3
    assert "only the user running the node, or root" in result.err


async def test_a_second_node_on_the_same_data_dir_refuses_to_start(
    roost_server: RunningServer,
) -> None:
    with pytest.raises(NodeRunning, match=f"pid {os.getpid()}"):
        async with running_server(roost_server.data_dir):
            pass
    # The first node is unaffected.
    assert roost_server.socket.exists()


async def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    data_dir = tmp_path / "roost"
    data_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(data_dir / "ctl.sock"))
    stale.close()
    async with running_server(data_dir) as server:
        with ControlClient.connect(server.socket) as client:
            assert (await asyncio.to_thread(client.request, "nodes"))[0]["pid"] == os.getpid()


async def test_a_socket_path_too_long_for_the_kernel_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    async with running_server(deep) as server:
        assert len(str(server.socket)) > 108
        with ControlClient.connect(server.socket) as client:
            assert (await asyncio.to_thread(client.request, "nodes"))[0]["self"] is True


# -- completion -----------------------------------------------------------------------------------


def _complete(script: str, words: list[str]) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _roost; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
async def test_bash_completion_completes_commands_actions_and_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = await run_cli(capsys, ["ctl", "completion", "bash"])
    assert result.code == 0
    script = result.out
    assert "complete -o default -F _roost roost" in script
    assert "ctl" in _complete(script, ["roost", "c"])
    assert _complete(script, ["roost", "ctl", "us"]) == ["user"]
    assert _complete(script, ["roost", "ctl", "user", ""]) == ["add", "del", "list", "passwd"]
    assert _complete(script, ["roost", "ctl", "--json", "config", "s"]) == ["set", "status"]
    assert _complete(script, ["roost", "ctl", "config", "set", "limits.offline_m"]) == [
        "limits.offline_messages"
    ]
    assert "--password" in _complete(script, ["roost", "ctl", "user", "add", "a@b", "--"])
    zsh = await run_cli(capsys, ["ctl", "completion", "zsh"])
    assert zsh.out.startswith("autoload -U +X bashcompinit && bashcompinit\n")
