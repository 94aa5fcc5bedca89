"""The configuration schema: every setting declared once, with type, default, bounds and doc.

A setting is a field of :class:`roost.config.ServerConfig` declared with :func:`option`, which
records where it lives in the configuration file (``[section] name``), a one-line
documentation, its bounds or choices, whether it may change while the server runs, and
whether it is a secret (never printed). Everything else is derived from these declarations:
the TOML keys, the environment variables (``ROOST_SECTION__NAME``), validation and its error
messages, ``roost config show``, and the reference in ``docs/configuration.md`` (generated,
and checked for staleness by a test).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_META: Final = "roost.setting"


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of the schema."""

    key: str  # "section.name", as written in the file
    attribute: str  # the ServerConfig field
    kind: type  # int, float, bool, str, Path or list (of str)
    optional: bool  # None allowed
    default: Any
    doc: str
    runtime: bool  # may change without a restart
    minimum: float | None
    maximum: float | None
    choices: tuple[str, ...] | None
    secret: bool

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]

    @property
    def env(self) -> str:
        return "ROOST_" + self.key.upper().replace(".", "__")

    def type_name(self) -> str:
        name = {int: "integer", float: "number", bool: "boolean", str: "string", Path: "path"}.get(
            self.kind, "list of strings"
        )
        return f"{name} or none" if self.optional else name


def option(
    default: Any,
    *,
    key: str,
    doc: str,
    runtime: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
    secret: bool = False,
) -> Any:
    """Declare a ServerConfig field as a setting (see the module docstring)."""
    metadata = {
        _META: {
            "key": key,
            "doc": doc,
            "runtime": runtime,
            "minimum": minimum,
            "maximum": maximum,
            "choices": choices,
            "secret": secret,
        }
    }
    if isinstance(default, list):
        frozen = tuple(default)
        return dataclasses.field(default_factory=lambda: list(frozen), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings_of(config_class: type) -> list[Setting]:
    """The settings a config dataclass declares, in declaration order."""
    hints = typing.get_type_hints(config_class)
    result = []
    for field in dataclasses.fields(config_class):
        meta = field.metadata.get(_META)
        if meta is None:
            continue
        kind, optional = _kind(hints[field.name])
        if field.default is not dataclasses.MISSING:
            default = field.default
        else:
            default = field.default_factory()  # type: ignore[operator]
        result.append(
            Setting(
                key=meta["key"],
                attribute=field.name,
                kind=kind,
                optional=optional,
                default=default,
                doc=meta["doc"],
                runtime=meta["runtime"],
                minimum=meta["minimum"],
                maximum=meta["maximum"],
                choices=meta["choices"],
                secret=meta["secret"],
            )
        )
    return result


def _kind(hint: Any) -> tuple[type, bool]:
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if typing.get_origin(hint) is list:
        return list, optional
    return hint, optional
