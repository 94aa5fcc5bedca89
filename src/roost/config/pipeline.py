"""Building a configuration from its layers, with provenance and clear errors.

Layers, lowest first (a higher layer wins for every key it sets):

1. ``default``  - the schema (:class:`roost.config.ServerConfig`);
2. ``file``     - a TOML file: ``--config FILE``, else ``roost.toml`` in the data directory;
3. ``env``      - ``ROOST_SECTION__NAME`` variables (``ROOST_SERVER__LOG_LEVEL=debug``);
4. ``flag``     - command-line options given explicitly;
5. ``override`` - runtime overrides (``roost ctl config set``), persisted in
   ``overrides.toml`` in the data directory so that they survive restarts.

Every value is a :class:`Value` that knows its layer and where in it it came from (file and
line, variable name, flag), and a :class:`LoadedConfig` keeps, per key, the winning value and
the ones it shadows, for ``roost config show --origin`` and ``roost config explain KEY``.

Validation collects every problem before failing: unknown keys (with a did-you-mean), wrong
types and out-of-range values, each naming the key, the layer and its location. A node
refuses to start on an invalid configuration, and a reload that does not validate leaves the
running configuration untouched.

The data directory is needed to find the file, so it is settled first from the layers that
cannot come from the file (flags, environment, default).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import tomli_w

from roost.config import ServerConfig
from roost.config.schema import Setting, settings_of

LAYERS: Final = ("default", "file", "env", "flag", "override")
CONFIG_FILE: Final = "roost.toml"
OVERRIDES_FILE: Final = "overrides.toml"
ENV_PREFIX: Final = "ROOST_"

SCHEMA: Final = {s.key: s for s in settings_of(ServerConfig)}
_BY_ATTRIBUTE: Final = {s.attribute: s for s in SCHEMA.values()}
REDACTED: Final = "********"


@dataclass(frozen=True, slots=True)
class Value:
    value: Any
    layer: str
    where: str = ""  # "roost.toml:12", "ROOST_C2S__PORT", "--c2s-port"

    def describe(self) -> str:
        return f"{self.layer} ({self.where})" if self.where else self.layer


@dataclass(frozen=True, slots=True)
class Problem:
    key: str
    message: str
    origin: str  # layer and location

    def __str__(self) -> str:
        return f"{self.key}: {self.message} [{self.origin}]"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration:\n{lines}")


@dataclass(slots=True)
class LoadedConfig:
    """A validated configuration and the provenance of each of its values."""

    config: ServerConfig
    values: dict[str, list[Value]]  # key -> every layer's value, lowest first
    version: int = 1
    files: list[Path] = field(default_factory=list)

    def origin(self, key: str) -> Value:
        return self.values[key][-1]

    def explain(self, key: str) -> list[Value]:
        """The winning value first, then the ones it shadows (highest first)."""
        if key not in SCHEMA:
            raise KeyError(_unknown(key))
        return list(reversed(self.values[key]))

    def show(self) -> list[tuple[str, str, Value]]:
        """(key, displayed value, origin) for every setting; secrets redacted."""
        rows = []
        for key, setting in SCHEMA.items():
            origin = self.origin(key)
            rows.append((key, display(setting, origin.value), origin))
        return rows


def display(setting: Setting, value: Any) -> str:
    if setting.secret and value is not None:
        return REDACTED
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key, SCHEMA, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown setting '{key}'{hint}"


# -- layers ----------------------------------------------------------------------------------


def file_layer(path: Path, layer: str = "file") -> tuple[dict[str, Value], list[Problem]]:
    """Settings from a TOML file, each with its file:line."""
    try:
        text = path.read_text()
    except OSError as exc:
        return {}, [Problem("(file)", f"cannot read {path}: {exc.strerror}", layer)]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return {}, [Problem("(file)", f"not valid TOML: {exc}", f"{layer} ({path})")]
    lines = _key_lines(text)
    values: dict[str, Value] = {}
    problems: list[Problem] = []
    for key, value in _flatten(data):
        where = f"{path}:{lines.get(key, '?')}"
        if key not in SCHEMA:
            problems.append(Problem(key, _unknown(key), f"{layer} ({where})"))
            continue
        values[key] = Value(value, layer, where)
    return values, problems


def env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Value], list[Problem]]:
    values: dict[str, Value] = {}
    problems: list[Problem] = []
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".", 1)
        if key not in SCHEMA:
            problems.append(Problem(key, _unknown(key), f"env ({name})"))
            continue
        values[key] = Value(text, "env", name)
    return values, problems


def flag_layer(flags: Mapping[str, tuple[Any, str]]) -> dict[str, Value]:
    """``{key: (value, "--flag")}`` for the flags given explicitly."""
    return {key: Value(value, "flag", flag) for key, (value, flag) in flags.items()}


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key.count(".") < 1:
            yield from _flatten(value, key + ".")
        else:
            yield key, value


_SECTION = re.compile(r"^\s*\[([^\]]+)\]")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_.\-\"]+)\s*=")


def _key_lines(text: str) -> dict[str, int]:
    """Line numbers of keys in simple TOML (tomllib keeps none), for error messages."""
    lines: dict[str, int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        if match := _SECTION.match(line):
            section = match.group(1).strip().strip('"') + "."
        elif match := _ASSIGN.match(line):
            lines.setdefault(section + match.group(1).strip('"'), number)
    return lines


# -- conversion ------------------------------------------------------------------------------


def convert(setting: Setting, raw: Any, *, typed_source: bool = False) -> Any:
    """The typed value of ``raw`` (TOML value, or text from the environment or a flag).

    With ``typed_source`` (a TOML file), text is not accepted for numbers and booleans:
    ``port = "5222"`` is a mistake worth reporting. Raises ValueError with a message for the
    user.
    """
    text = isinstance(raw, str)
    if typed_source and text and setting.kind in (bool, int, float):
        article = "an" if setting.type_name()[0] in "aeiou" else "a"
        raise ValueError(f"expected {article} {setting.type_name()}, got the string {raw!r}")
    if raw is None or (text and raw == "" and setting.optional):
        if setting.optional:
            return None
        raise ValueError(f"a {setting.type_name()} is required")
    kind = setting.kind
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if text and raw.lower() in ("true", "yes", "on", "1"):
            return True
        if text and raw.lower() in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"expected a boolean (true or false), got {raw!r}")
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError(f"expected an integer, got {raw!r}")
        try:
            value: Any = int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    elif kind is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError(f"expected a number, got {raw!r}")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    elif kind is list:
        if text:
            value = [item.strip() for item in raw.split(",") if item.strip()]
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            value = list(raw)
        else:
            raise ValueError(f"expected a list of strings, got {raw!r}")
    elif kind is Path:
        if not text:
            raise ValueError(f"expected a path, got {raw!r}")
        value = Path(raw)
    else:
        if not text:
            raise ValueError(f"expected a string, got {raw!r}")
        value = raw
    if setting.choices is not None and value not in setting.choices:
        raise ValueError(f"must be one of {', '.join(setting.choices)}, got {value!r}")
    if setting.minimum is not None and value < setting.minimum:
        raise ValueError(f"must be at least {_number(setting.minimum)}, got {value}")
    if setting.maximum is not None and value > setting.maximum:
        raise ValueError(f"must be at most {_number(setting.maximum)}, got {value}")
    return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# -- building --------------------------------------------------------------------------------


def build(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, tuple[Any, str]] | None = None,
    overrides: bool = True,
    version: int = 1,
) -> LoadedConfig:
    """Build and validate a configuration from every layer. Raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    problems: list[Problem] = []
    layers: list[dict[str, Value]] = [
        {key: Value(s.default, "default") for key, s in SCHEMA.items()}
    ]
    env_values, env_problems = env_layer(environ)
    flag_values = flag_layer(flags or {})
    data_dir = _early_data_dir(env_values, flag_values, problems)
    files: list[Path] = []
    path = config_file if config_file is not None else data_dir / CONFIG_FILE
    if config_file is not None or path.exists():
        file_values, file_problems = file_layer(path)
        layers.append(file_values)
        problems += file_problems
        files.append(path)
    layers += [env_values, flag_values]
    problems += env_problems
    overrides_path = data_dir / OVERRIDES_FILE
    if overrides and overrides_path.exists():
        override_values, override_problems = file_layer(overrides_path, "override")
        layers.append(override_values)
        problems += override_problems
        files.append(overrides_path)
    values: dict[str, list[Value]] = {key: [] for key in SCHEMA}
    for layer in layers:
        for key, value in layer.items():
            setting = SCHEMA[key]
            try:
                typed = (
                    value.value
                    if value.layer == "default"
                    else convert(
                        setting, value.value, typed_source=value.layer in ("file", "override")
                    )
                )
            except ValueError as exc:
                problems.append(Problem(key, str(exc), value.describe()))
                continue
            values[key].append(Value(typed, value.layer, value.where))
    if problems:
        raise ConfigError(problems)
    config = ServerConfig(**{SCHEMA[k].attribute: v[-1].value for k, v in values.items()})
    return LoadedConfig(config, values, version, files)


def _early_data_dir(
    env_values: dict[str, Value], flag_values: dict[str, Value], problems: list[Problem]
) -> Path:
    setting = SCHEMA["server.data_dir"]
    for source in (flag_values, env_values):
        value = source.get("server.data_dir")
        if value is not None:
            try:
                return Path(convert(setting, value.value))
            except ValueError as exc:
                problems.append(Problem(setting.key, str(exc), value.describe()))
    return Path(setting.default)


def check_file(path: Path) -> list[Problem]:
    """Validate a configuration file alone (``roost config check``)."""
    values, problems = file_layer(path)
    for key, value in values.items():
        try:
            convert(SCHEMA[key], value.value, typed_source=True)
        except ValueError as exc:
            problems.append(Problem(key, str(exc), value.describe()))
    return problems


# -- changes ---------------------------------------------------------------------------------


def changes(old: ServerConfig, new: ServerConfig) -> dict[str, tuple[Any, Any]]:
    """key -> (old value, new value) for every setting that differs."""
    result = {}
    for key, setting in SCHEMA.items():
        before = getattr(old, setting.attribute)
        after = getattr(new, setting.attribute)
        if before != after:
            result[key] = (before, after)
    return result


def needs_restart(changed: Iterable[str]) -> list[str]:
    return sorted(key for key in changed if not SCHEMA[key].runtime)


def write_overrides(data_dir: Path, overrides: Mapping[str, Any]) -> Path:
    """Persist runtime overrides (``{key: typed value}``; None removes a key)."""
    path = data_dir / OVERRIDES_FILE
    current: dict[str, Any] = {}
    if path.exists():
        existing, _ = file_layer(path, "override")
        current = {key: value.value for key, value in existing.items()}
    for key, value in overrides.items():
        if key not in SCHEMA:
            raise KeyError(_unknown(key))
        if value is None:
            current.pop(key, None)
        else:
            current[key] = str(value) if isinstance(value, Path) else value
    nested: dict[str, dict[str, Any]] = {}
    for key, value in sorted(current.items()):
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of this process's own: nodes sharing a data directory (roost up --nodes N) all
    # write the file when a cluster-wide `config set` reaches them at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(
        "# Runtime overrides set with `roost ctl config set`; they win over every other layer.\n"
        + tomli_w.dumps(nested)
    )
    os.replace(tmp, path)
    return path


def config_replace(config: ServerConfig, **changes_: Any) -> ServerConfig:
    return dataclasses.replace(config, **changes_)
