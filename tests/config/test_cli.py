"""``roost config`` and ``roost up`` facing a configuration, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roost.cli import main


def test_show_with_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOST_SERVER__LOG_LEVEL", "debug")
    assert (
        main(["config", "show", "--origin", "--data-dir", str(tmp_path), "--c2s-port", "7000"]) == 0
    )
    out = capsys.readouterr().out
    lines = {line.split("=")[0].strip(): line for line in out.splitlines()}
    assert lines["c2s.port"].endswith("7000    # flag (--c2s-port)")
    assert lines["server.log_level"].endswith("debug    # env (ROOST_SERVER__LOG_LEVEL)")
    assert lines["server.domain"].endswith("localhost    # default")


def test_show_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--json", "--data-dir", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["c2s.port"] == "5222"
    assert data["modules.enabled"].startswith("roster")


def test_explain_shows_the_winner_and_what_it_shadows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "roost.toml").write_text("[c2s]\nport = 6001\n")
    code = main(["config", "explain", "c2s.port", "--data-dir", str(tmp_path), "--c2s-port", "7"])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["wins", "7", "from", "flag", "(--c2s-port)"]
    assert out[2].split()[:3] == ["shadowed", "6001", "from"]
    assert out[3].split() == ["shadowed", "5222", "from", "default"]


def test_explain_unknown_key_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "explain", "c2s.prot", "--data-dir", str(tmp_path)]) == 2
    assert "did you mean 'c2s.port'?" in capsys.readouterr().err


def test_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[limits]\noffline_messages = 10\n")
    assert main(["config", "check", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\noffline_mesages = 10\n")
    assert main(["config", "check", str(bad)]) == 1
    assert "did you mean 'limits.offline_messages'?" in capsys.readouterr().err


def test_up_refuses_an_invalid_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "roost.toml").write_text("[c2s]\nport = 70000\n")
    with pytest.raises(SystemExit) as exit_:
        main(["up", "--data-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"c2s.port: must be at most 65535, got 70000 [file ({tmp_path / 'roost.toml'}:2)]" in (
        capsys.readouterr().err
    )
