"""``roost user``: accounts managed from the command line, with and without a running server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roost.cli import main
from roost.testing import running_server
from roost.testing.rawclient import RawClient


def test_add_list_passwd_del(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["user", "add", "Alice@LocalHost", "--password", "one", *data]) == 0
    assert main(["user", "add", "bob@localhost", "--password", "two", *data]) == 0
    assert main(["user", "add", "alice@localhost", "--password", "x", *data]) == 1
    capsys.readouterr()
    assert main(["user", "list", *data]) == 0
    assert capsys.readouterr().out.split() == ["alice@localhost", "bob@localhost"]
    assert main(["user", "passwd", "alice@localhost", "--password", "three", *data]) == 0
    assert main(["user", "del", "bob@localhost", *data]) == 0
    assert main(["user", "del", "bob@localhost", *data]) == 1
    capsys.readouterr()
    main(["user", "list", *data])
    assert capsys.readouterr().out.split() == ["alice@localhost"]


def test_invalid_jid_is_refused_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["user", "add", "not valid@localhost", "--password", "x", "--data-dir", str(tmp_path)])
    assert "invalid JID" in str(exit_.value.code)


def test_missing_arguments_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["user", "add"])
    assert exit_.value.code == 2


async def test_user_added_while_the_server_runs_can_log_in(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        code = await asyncio.to_thread(
            main,
            ["user", "add", "carol@localhost", "--password", "pw", "--data-dir", str(tmp_path)],
        )
        assert code == 0
        client = await RawClient.logged_in(
            server.host, server.port, "carol", "pw", cert=server.cert, resource="cli"
        )
        assert client.jid == "carol@localhost/cli"
        await client.close()
