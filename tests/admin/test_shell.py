"""The shell: code evaluated inside the running node, over the control channel and in tests."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import sys
from typing import Any

import pytest

from roost.admin.client import AsyncControlClient, ControlClient, RemoteError
from roost.cli.shell import statements
from roost.testing import RunningServer
from tests.admin.conftest import Outcome, run_cli
from tests.admin.test_ctl import online

# -- RunningServer.eval / call: the same semantics, in the test's loop ---------------------------


async def test_eval_returns_expression_values_and_keeps_the_namespace(
    roost_server: RunningServer,
) -> None:
    assert await roost_server.eval("1 + 1") == 2
    assert await roost_server.eval("x = 40") is None
    assert await roost_server.eval("x + 2") == 42
    assert await roost_server.eval("server") is roost_server.server
    assert await roost_server.eval("await asyncio.sleep(0, 'awaited')") == "awaited"
    assert await roost_server.eval("y = await asyncio.sleep(0, 5)\ny * 2") == 10


async def test_eval_raises_what_the_code_raised(roost_server: RunningServer) -> None:
    with pytest.raises(ZeroDivisionError):
        await roost_server.eval("1 / 0")
    with pytest.raises(SyntaxError):
        await roost_server.eval("def (")


async def test_evaluate_captures_output_without_touching_the_real_streams(
    roost_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = await roost_server.evaluate(
        "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n'done'"
    )
    assert (outcome.status, outcome.value) == ("ok", "done")
    assert outcome.stdout == "to out\n"
    assert outcome.stderr == "to err\n"
    captured = capsys.readouterr()
    assert "to out" not in captured.out
    assert "to err" not in captured.err
    print("after")  # the real stream is back
    assert capsys.readouterr().out == "after\n"


async def test_call_runs_a_function_in_the_node(roost_server: RunningServer) -> None:
    def domain(server: Any, suffix: str) -> str:
        return str(server.domain) + suffix

    async def users(server: Any) -> list[str]:
        return list(await server.storage.list_users())

    await roost_server.create_user("alice")
    assert await roost_server.call(domain, roost_server.server, "!") == "localhost!"
    assert await roost_server.call(users, roost_server.server) == ["alice@localhost"]


async def test_helpers_reach_the_running_server(roost_server: RunningServer) -> None:
    await roost_server.create_user("alice")
    client = await online(roost_server, "alice", "phone")
    assert await roost_server.eval("[str(s.jid) for s in sessions()]") == ["alice@localhost/phone"]
    assert await roost_server.eval("session('alice@localhost').available") is True
    assert await roost_server.eval("session('alice@localhost/phone').priority") == 0
    with pytest.raises(LookupError, match="no session alice@localhost/tablet"):
        await roost_server.eval("session('alice@localhost/tablet')")
    assert await roost_server.eval("config().domain") == "localhost"
    assert await roost_server.eval("stats()['sessions']") == 1
    assert (await roost_server.eval("await ctl.sessions()"))[0]["jid"] == "alice@localhost/phone"
    assert await roost_server.eval("(await ctl.user_list())") == ["alice@localhost"]
    assert await roost_server.eval("groups()") == {}  # one node: no process groups
    with pytest.raises(LookupError, match="no scope 'sessions'"):
        await roost_server.eval("groups('sessions')")
    assert (await roost_server.eval("gates()"))[0]["gate"] == "storage"
    await client.close()


@pytest.mark.roost_config(admin_eval_timeout=0.2)
async def test_a_long_evaluation_times_out_and_the_node_keeps_serving(
    roost_server: RunningServer,
) -> None:
    with pytest.raises(TimeoutError, match=r"longer than 0\.2 s"):
        await roost_server.eval("await asyncio.sleep(60)")
    await roost_server.create_user("alice")
    client = await online(roost_server, "alice", "phone")
    await client.close()


# -- over the control channel ---------------------------------------------------------------------


def shell_session(server: RunningServer) -> ControlClient:
    client = ControlClient.connect(server.socket)
    client.request("shell")
    return client


async def test_the_channel_evaluates_and_returns_output_and_values(
    roost_server: RunningServer,
) -> None:
    def conversation() -> list[Any]:
        with shell_session(roost_server) as client:
            return [
                client.request("eval", {"code": "n = 20"}),
                client.request("eval", {"code": "print('hello'); n * 2"}),
                client.request("eval", {"code": "server"}),
            ]

    assigned, printed, unjsonable = await asyncio.to_thread(conversation)
    assert assigned == {"repr": None, "value": None, "stdout": "", "stderr": ""}
    assert printed == {"repr": "40", "value": 40, "stdout": "hello\n", "stderr": ""}
    assert unjsonable["value"] is None
    assert unjsonable["repr"].startswith("<Server localhost")


async def test_an_exception_comes_back_with_its_traceback_and_output(
    roost_server: RunningServer,
) -> None:
    def fail() -> RemoteError:
        with shell_session(roost_server) as client:
            try:
                client.request("eval", {"code": "print('before')\n{}['missing']"})
            except RemoteError as exc:
                return exc
        raise AssertionError("no error")

    error = await asyncio.to_thread(fail)
    assert error.code == "exception"
    assert error.exit_code == 1
    assert 'File "<shell#1>", line 2, in <module>' in error.message
    assert "{}['missing']" in error.message
    assert error.message.rstrip().endswith("KeyError: 'missing'")
    assert error.data["stdout"] == "before\n"


async def test_completion_comes_from_the_node_namespace(roost_server: RunningServer) -> None:
    def complete() -> tuple[list[str], list[str]]:
        with shell_session(roost_server) as client:
            client.request("eval", {"code": "answer_to_everything = 42"})
            return (
                client.request("complete", {"text": "answer_"}),
                client.request("complete", {"text": "server.ses"}),
            )

    names, attributes = await asyncio.to_thread(complete)
    assert names == ["answer_to_everything"]
    assert "server.sessions" in attributes


@pytest.mark.roost_config(admin_eval_timeout=0.2)
async def test_the_channel_reports_a_timeout(roost_server: RunningServer) -> None:
    def slow() -> RemoteError:
        with shell_session(roost_server) as client:
            try:
                client.request("eval", {"code": "await asyncio.sleep(60)"})
            except RemoteError as exc:
                assert client.request("eval", {"code": "'still here'"})["value"] == "still here"
                return exc
        raise AssertionError("no timeout")

    error = await asyncio.to_thread(slow)
    assert error.code == "timeout"


async def test_cancel_interrupts_a_running_evaluation(roost_server: RunningServer) -> None:
    def interrupted() -> tuple[dict[str, Any], Any]:
        with shell_session(roost_server) as client:
            evaluation = client.send("eval", {"code": "await asyncio.sleep(60)"})
            cancelled = client.request("cancel", {"target": evaluation})
            return client.wait(evaluation), cancelled

    response, cancelled = await asyncio.to_thread(interrupted)
    assert cancelled == {"cancelled": True}
    assert response["ok"] is False
    assert response["error"]["code"] == "cancelled"


async def test_a_disconnecting_shell_cancels_its_evaluation(roost_server: RunningServer) -> None:
    started, left = asyncio.Event(), asyncio.Event()
    roost_server.server.events = (started, left)  # type: ignore[attr-defined]
    code = (
        "started, left = server.events\n"
        "started.set()\n"
        "try:\n    await asyncio.sleep(60)\nfinally:\n    left.set()\n"
    )
    client = await asyncio.to_thread(shell_session, roost_server)
    await asyncio.to_thread(client.send, "eval", {"code": code})
    await asyncio.wait_for(started.wait(), 10)
    client.close()
    await asyncio.wait_for(left.wait(), 10)


async def test_every_evaluation_is_audited(roost_server: RunningServer) -> None:
    def evaluate() -> None:
        with shell_session(roost_server) as client:
            client.request("eval", {"code": "1 + 1"})
            client.request("eval", {"code": "for i in range(2):\n    pass"})

    await asyncio.to_thread(evaluate)
    audit = roost_server.data_dir / "audit.log"
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    evals = [e for e in entries if e["kind"] == "eval"]
    assert [e["code"] for e in evals] == ["1 + 1", "for i in range(2):\n    pass"]
    assert {(e["uid"], e["pid"]) for e in evals} == {(os.getuid(), os.getpid())}
    assert all(e["time"].endswith("+00:00") for e in evals)


async def test_state_changing_commands_are_audited_without_secrets(
    roost_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ctl", "--socket", str(roost_server.socket), "user", "add", "bob@localhost"]
    assert (await run_cli(capsys, [*argv, "--password", "hunter2"])).code == 0
    text = (roost_server.data_dir / "audit.log").read_text()
    [entry] = [json.loads(line) for line in text.splitlines()]
    assert entry["command"] == "user add"
    assert entry["args"] == {"jid": "bob@localhost"}
    assert "hunter2" not in text


@pytest.mark.roost_config(admin_shell=False)
async def test_a_disabled_shell_is_refused(
    roost_server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def open_shell() -> RemoteError:
        try:
            shell_session(roost_server)
        except RemoteError as exc:
            return exc
        raise AssertionError("the shell opened")

    error = await asyncio.to_thread(open_shell)
    assert error.code == "shell-disabled"
    monkeypatch.setattr(sys, "stdin", io.StringIO("1 + 1\n"))
    result = await run_cli(capsys, ["shell", "--socket", str(roost_server.socket)])
    assert result.code == 1
    assert "the shell is disabled on this node (admin.shell = false)" in result.err


async def test_turning_the_shell_off_stops_open_shells_too(roost_server: RunningServer) -> None:
    def attempt() -> RemoteError:
        with shell_session(roost_server) as client:
            client.request("config set", {"key": "admin.shell", "value": "false"})
            try:
                client.request("eval", {"code": "1"})
            except RemoteError as exc:
                return exc
        raise AssertionError("evaluated")

    assert (await asyncio.to_thread(attempt)).code == "shell-disabled"


async def test_eval_needs_the_shell_mode(roost_server: RunningServer) -> None:
    def attempt() -> RemoteError:
        with ControlClient.connect(roost_server.socket) as client:
            try:
                client.request("eval", {"code": "1"})
            except RemoteError as exc:
                return exc
        raise AssertionError("evaluated")

    assert (await asyncio.to_thread(attempt)).code == "shell-not-open"


async def test_the_async_client_evaluates_in_the_node(roost_server: RunningServer) -> None:
    client = await AsyncControlClient.connect(roost_server.socket)
    try:
        assert await client.eval("await asyncio.sleep(0, 7)") == 7
        assert await client.call("os:getpid") == os.getpid()
        assert await client.call("roost.admin.builtin:node_name") == await client.eval(
            "__import__('socket').gethostname()"
        )
        with pytest.raises(RemoteError) as failed:
            await client.eval("1 / 0")
        assert "ZeroDivisionError" in failed.value.message
        assert (await client.request("nodes"))[0]["self"] is True
    finally:
        await client.close()


# -- `roost shell` with stdin not a terminal --------------------------------------------------


async def shell(
    server: RunningServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    script: str,
) -> Outcome:
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    return await run_cli(capsys, ["shell", "--socket", str(server.socket)])


async def test_roost_shell_evaluates_a_script_from_stdin(
    roost_server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = (
        "total = 0\n"
        "for i in range(3):\n"
        "    total += i\n"
        "\n"
        "@staticmethod\n"
        "def double(x):\n"
        "\n"
        "    return 2 * x\n"
        "total; double.__func__(total)\n"
        "print('printed')\n"
        "await asyncio.sleep(0, 'awaited')\n"
        "None\n"
    )
    result = await shell(roost_server, capsys, monkeypatch, script)
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["6", "printed", "'awaited'"]


async def test_roost_shell_stops_at_the_first_failure_with_exit_code_1(
    roost_server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await shell(roost_server, capsys, monkeypatch, "1\nraise ValueError('no')\n2\n")
    assert result.code == 1
    assert result.out.splitlines() == ["1"]
    assert "ValueError: no" in result.err
    broken = await shell(roost_server, capsys, monkeypatch, "x = (\n")
    assert broken.code == 1
    assert "SyntaxError" in broken.err


async def test_roost_shell_without_a_node_is_exit_code_3(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("1\n"))
    result = await run_cli(capsys, ["shell", "--data-dir", str(tmp_path)])
    assert result.code == 3


def test_statements_splits_input_as_the_interpreter_would() -> None:
    source = "a = 1; b = 2\n@dec\ndef f():\n\n    return 1\nif a:\n    pass\nelse:\n    pass\n"
    assert statements(source) == [
        "a = 1; b = 2\n",
        "@dec\ndef f():\n\n    return 1\n",
        "if a:\n    pass\nelse:\n    pass\n",
    ]
