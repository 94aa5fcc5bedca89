"""The configuration pipeline: layers, provenance, validation, overrides, generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.config import ServerConfig
from roost.config.docs import reference
from roost.config.pipeline import (
    SCHEMA,
    ConfigError,
    build,
    changes,
    check_file,
    needs_restart,
    write_overrides,
)

ROOT = Path(__file__).resolve().parents[2]


def _flags(data_dir: Path, **extra: tuple[str, str]) -> dict[str, tuple[str, str]]:
    return {"server.data_dir": (str(data_dir), "--data-dir"), **extra}


def test_defaults_alone_give_the_in_a_box_configuration(tmp_path: Path) -> None:
    loaded = build(environ={}, flags=_flags(tmp_path))
    assert loaded.config.domain == "localhost"
    assert loaded.config.c2s_port == 5222
    assert loaded.origin("server.domain").layer == "default"
    assert loaded.origin("server.data_dir").layer == "flag"


def test_each_layer_overrides_the_one_below_and_provenance_says_which(tmp_path: Path) -> None:
    (tmp_path / "roost.toml").write_text(
        '[server]\ndomain = "file.example"\nlog_level = "warning"\n\n[c2s]\nport = 6001\n'
    )
    write_overrides(tmp_path, {"limits.max_stanza_size": 9000})
    environ = {"ROOST_C2S__PORT": "6002", "ROOST_SERVER__LOG_LEVEL": "error"}
    loaded = build(environ=environ, flags=_flags(tmp_path, **{"c2s.port": ("6003", "--c2s-port")}))
    config = loaded.config
    assert config.domain == "file.example"
    assert config.log_level == "error"
    assert config.c2s_port == 6003
    assert config.max_stanza_size == 9000
    domain = loaded.origin("server.domain")
    assert (domain.layer, domain.where) == ("file", f"{tmp_path / 'roost.toml'}:2")
    assert loaded.origin("server.log_level").where == "ROOST_SERVER__LOG_LEVEL"
    assert [v.layer for v in loaded.explain("c2s.port")] == ["flag", "env", "file", "default"]
    assert [v.value for v in loaded.explain("c2s.port")] == [6003, 6002, 6001, 5222]
    assert loaded.origin("limits.max_stanza_size").layer == "override"


def test_runtime_overrides_win_over_flags_and_survive_a_restart(tmp_path: Path) -> None:
    write_overrides(tmp_path, {"server.log_level": "debug", "auth.registration": True})
    flags = _flags(tmp_path, **{"server.log_level": ("error", "--log-level")})
    first = build(environ={}, flags=flags)
    again = build(environ={}, flags=flags)  # a new process reads the same files
    for loaded in (first, again):
        assert loaded.config.log_level == "debug"
        assert loaded.config.registration is True
        assert [v.layer for v in loaded.explain("server.log_level")] == [
            "override",
            "flag",
            "default",
        ]
    write_overrides(tmp_path, {"server.log_level": None})
    assert build(environ={}, flags=flags).config.log_level == "error"


def test_an_explicit_config_file_is_used_instead_of_the_data_dir_one(tmp_path: Path) -> None:
    (tmp_path / "roost.toml").write_text('[server]\ndomain = "ignored.example"\n')
    other = tmp_path / "other.toml"
    other.write_text('[server]\ndomain = "chosen.example"\n')
    loaded = build(config_file=other, environ={}, flags=_flags(tmp_path))
    assert loaded.config.domain == "chosen.example"


def test_file_problems_name_the_key_the_file_and_the_line(tmp_path: Path) -> None:
    (tmp_path / "roost.toml").write_text(
        '[server]\ndomain = "ok.example"\nlog_lvl = "debug"\n\n[c2s]\nport = "5222"\n'
        "tls_port = 99999\n"
    )
    with pytest.raises(ConfigError) as error:
        build(environ={}, flags=_flags(tmp_path))
    text = str(error.value)
    where = tmp_path / "roost.toml"
    assert (
        "server.log_lvl: unknown setting 'server.log_lvl'; did you mean 'server.log_level'? "
        f"[file ({where}:3)]" in text
    )
    assert f"c2s.port: expected an integer, got the string '5222' [file ({where}:6)]" in text
    assert f"c2s.tls_port: must be at most 65535, got 99999 [file ({where}:7)]" in text
    assert len(error.value.problems) == 3


def test_environment_problems_name_the_variable(tmp_path: Path) -> None:
    environ = {"ROOST_LIMITS__AUTH_TIMEOUT": "soon", "ROOST_C2S__PROT": "1"}
    with pytest.raises(ConfigError) as error:
        build(environ=environ, flags=_flags(tmp_path))
    messages = {str(p) for p in error.value.problems}
    assert (
        "limits.auth_timeout: expected a number, got 'soon' [env (ROOST_LIMITS__AUTH_TIMEOUT)]"
        in messages
    )
    assert (
        "c2s.prot: unknown setting 'c2s.prot'; did you mean 'c2s.port'? [env (ROOST_C2S__PROT)]"
        in messages
    )


def test_flag_problems_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        build(environ={}, flags=_flags(tmp_path, **{"server.log_level": ("loud", "--log-level")}))
    (problem,) = error.value.problems
    assert str(problem) == (
        "server.log_level: must be one of debug, info, warning, error, got 'loud' "
        "[flag (--log-level)]"
    )


def test_a_toml_syntax_error_is_reported(tmp_path: Path) -> None:
    (tmp_path / "roost.toml").write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build(environ={}, flags=_flags(tmp_path))


def test_types_from_text_layers(tmp_path: Path) -> None:
    environ = {
        "ROOST_AUTH__REGISTRATION": "yes",
        "ROOST_MODULES__ENABLED": "roster, presence,disco",
        "ROOST_TLS__CERT": "/etc/roost/cert.pem",
    }
    config = build(environ=environ, flags=_flags(tmp_path)).config
    assert config.registration is True
    assert config.modules == ["roster", "presence", "disco"]
    assert config.tls_cert == Path("/etc/roost/cert.pem")


def test_secrets_are_redacted_in_show(tmp_path: Path) -> None:
    loaded = build(environ={"ROOST_TLS__KEY": "/secret/key.pem"}, flags=_flags(tmp_path))
    shown = {key: value for key, value, _ in loaded.show()}
    assert shown["tls.key"] == "********"
    assert loaded.config.tls_key == Path("/secret/key.pem")


def test_check_file_validates_without_building(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[c2s]\nport = 5300\n[modules]\nenabled = ["roster", "presence"]\n')
    assert check_file(good) == []
    bad = tmp_path / "bad.toml"
    bad.write_text("[modules]\nenabled = [1, 2]\n")
    (problem,) = check_file(bad)
    assert problem.key == "modules.enabled"
    assert "expected a list of strings" in problem.message


def test_changes_and_what_needs_a_restart() -> None:
    old = ServerConfig()
    new = ServerConfig(log_level="debug", c2s_port=6000, max_stanza_size=10_000)
    changed = changes(old, new)
    assert changed == {
        "server.log_level": ("info", "debug"),
        "c2s.port": (5222, 6000),
        "limits.max_stanza_size": (256 * 1024, 10_000),
    }
    assert needs_restart(changed) == ["c2s.port"]


def test_every_setting_has_documentation_and_an_environment_name() -> None:
    for key, setting in SCHEMA.items():
        assert setting.doc, key
        assert setting.env == "ROOST_" + key.upper().replace(".", "__")


def test_the_configuration_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == reference(), (
        "docs/configuration.md is stale: run `roost config docs > docs/configuration.md`"
    )
