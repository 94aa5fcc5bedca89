"""Hot reload: read the configuration again and apply what can change while the node runs.

A reload (SIGHUP to ``roost up``, ``roost ctl config reload``, and ``config set``/``unset``
after writing the override) goes through four steps:

1. *Build a candidate* from the same inputs the node started with (:class:`ConfigSource`: the
   file, the environment as it was at start, the flags, and the runtime overrides as they are
   on disk now). An invalid candidate raises :class:`CommandError` ``invalid-config`` with
   every problem and leaves the running configuration untouched.
2. *Compute the changes* against the running configuration. Settings declared
   ``runtime=False`` are not applied: they are reported as needing a restart and the node
   keeps running with the old value.
3. *Prepare* everything that can fail before touching anything: the TLS context is built
   from the certificate and key files again, on every reload, because renewed certificates
   usually keep their paths.
4. *Commit*, each step recording how to undo itself; if one raises, the steps done are
   undone in reverse order and the reload fails with ``reload-failed``. Applying is
   all-or-nothing. The commit replaces ``server.config`` with a new ServerConfig in one
   assignment (code reads settings from it when it needs them, so live sessions see the new
   limits at their next check), sets the log level, swaps the authenticator (SCRAM
   iterations), gives the gates their new thresholds (``[gates]``) and swaps the TLS context
   (new connections; established ones keep theirs), and bumps ``server.config_version`` when
   anything changed.

Versions across a cluster. ``config_version`` counts this node's changes since it started, so
two nodes' counters say nothing about each other. :func:`digest` is the comparable part: a
hash of the configured values of every setting except those that name or place one node
(:data:`NODE_SETTINGS`). Nodes with the same digest are configured alike; ``roost ctl config
status`` in a cluster shows each node's, so a node that missed a ``config set`` stands out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from weakref import WeakKeyDictionary

from roost.admin.commands import CommandError
from roost.config import ServerConfig
from roost.config.pipeline import (
    SCHEMA,
    ConfigError,
    LoadedConfig,
    Value,
    build,
    changes,
    display,
    needs_restart,
)

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.admin.reload")

_PROGRAMMATIC: Final = "code"  # where pinned values come from, in provenance

#: Settings that name or place one node: they differ between the nodes of a cluster by
#: design, so :func:`digest` leaves them out.
NODE_SETTINGS: Final = frozenset(
    {
        "server.data_dir",
        "c2s.host",
        "cluster.node",
        "cluster.listen",
        "cluster.join",
        "admin.socket",
        "admin.listen",
    }
)


def digest(config: ServerConfig) -> str:
    """A short hash of ``config`` without :data:`NODE_SETTINGS`: equal on nodes configured
    alike. (Secrets are hashed too, so that a changed password shows; the digest is shown
    to administrators only.)"""
    hashed = hashlib.sha256()
    for key, setting in sorted(SCHEMA.items()):
        if key not in NODE_SETTINGS:
            value = getattr(config, setting.attribute)
            hashed.update(json.dumps([key, value], default=str).encode() + b"\n")
    return hashed.hexdigest()[:12]


def configured(server: Server) -> ServerConfig:
    """What the node is configured with: what runs, and what waits for a restart."""
    return server.loaded.config if server.loaded is not None else server.config


@dataclass(frozen=True)
class ConfigSource:
    """The inputs a configuration is built from, kept so that a reload uses the same ones.

    ``pinned`` are typed values given in code (tests, embedding roost) by setting key: they
    rank with the flags, below runtime overrides, and are not range-checked, so that tests
    can use limits no operator should (a half-second authentication timeout).
    """

    config_file: Path | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    flags: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    pinned: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def capture(
        cls,
        config_file: Path | None,
        flags: Mapping[str, tuple[Any, str]],
        environ: Mapping[str, str] | None = None,
    ) -> ConfigSource:
        """The inputs of ``roost up``: the environment is copied now (its ROOST_ part)."""
        environ = os.environ if environ is None else environ
        return cls(
            config_file,
            {k: v for k, v in environ.items() if k.startswith("ROOST_")},
            dict(flags),
        )

    @classmethod
    def of_config(cls, config: ServerConfig) -> ConfigSource:
        """Inputs for a config made in code: every value that differs from the default."""
        pinned = {
            key: getattr(config, s.attribute)
            for key, s in SCHEMA.items()
            if key != "server.data_dir" and getattr(config, s.attribute) != s.default
        }
        return cls(flags={"server.data_dir": (str(config.data_dir), _PROGRAMMATIC)}, pinned=pinned)

    def build(self, version: int = 1) -> LoadedConfig:
        """A validated configuration. Raises :class:`~roost.config.pipeline.ConfigError`."""
        loaded = build(
            config_file=self.config_file,
            environ=self.environ,
            flags=self.flags,
            version=version,
        )
        if not self.pinned:
            return loaded
        values = {key: list(history) for key, history in loaded.values.items()}
        changed: dict[str, Any] = {}
        for key, value in self.pinned.items():
            history = values[key]
            position = len(history)
            if history and history[-1].layer == "override":
                position -= 1  # overrides still win
            else:
                changed[SCHEMA[key].attribute] = value
            history.insert(position, Value(value, "flag", _PROGRAMMATIC))
        config = dataclasses.replace(loaded.config, **changed)
        return LoadedConfig(config, values, loaded.version, loaded.files)


@dataclass
class ReloadReport:
    version: int
    changed: dict[str, tuple[str, str]]  # key -> (old, new), displayed (secrets redacted)
    applied: list[str]
    restart_needed: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "changed": {key: list(pair) for key, pair in self.changed.items()},
            "applied": self.applied,
            "restart_needed": self.restart_needed,
        }


_LOCKS: WeakKeyDictionary[Server, asyncio.Lock] = WeakKeyDictionary()


def lock(server: Server) -> asyncio.Lock:
    """Serialises reloads and override edits of one node."""
    found = _LOCKS.get(server)
    if found is None:
        found = _LOCKS[server] = asyncio.Lock()
    return found


def source_of(server: Server) -> ConfigSource:
    source = server.config_source
    if source is None:
        source = server.config_source = ConfigSource.of_config(server.config)
    return source


def candidate(server: Server) -> LoadedConfig:
    """Build the configuration as the inputs say now. Raises CommandError("invalid-config")."""
    try:
        return source_of(server).build(version=server.config_version + 1)
    except ConfigError as exc:
        raise CommandError(
            "invalid-config",
            "the configuration is invalid; nothing was changed:\n"
            + "\n".join(f"  - {p}" for p in exc.problems),
        ) from None


async def reload(server: Server) -> ReloadReport:
    """Build, validate and apply (see the module docstring)."""
    async with lock(server):
        return apply(server, candidate(server))


def apply(server: Server, loaded: LoadedConfig) -> ReloadReport:
    """Apply the runtime changes of ``loaded``, all or nothing. Raises CommandError."""
    old = server.config
    diff = changes(old, loaded.config)
    restart = needs_restart(diff)
    runtime = [key for key in diff if key not in restart]
    attributes = [SCHEMA[key].attribute for key in runtime]
    new = dataclasses.replace(old, **{a: getattr(loaded.config, a) for a in attributes})
    undo: list[Callable[[], None]] = []
    try:
        try:
            tls = server.make_tls_context(new)  # prepared first: the step most likely to fail
        except (OSError, ssl.SSLError) as exc:
            where = f"tls.cert {new.tls_cert}, tls.key {new.tls_key}" if new.tls_cert else "TLS"
            raise _Failure(f"{where}: {_reason(exc)}") from exc
        for step in _STEPS:
            undo.append(step(server, old, new, tls))
    except Exception as exc:
        for undo_step in reversed(undo):
            try:
                undo_step()
            except Exception:
                log.exception("rolling back a reload step failed")
        reason = _reason(exc)
        log.error("configuration reload failed and was rolled back: %s", reason)
        raise CommandError(
            "reload-failed", f"could not apply the configuration ({reason}); nothing was changed"
        ) from None
    previous = server.loaded
    server.loaded = loaded
    if new != old or previous is None or previous.config != loaded.config:
        server.config_version += 1  # what runs, or what is configured, changed
    loaded.version = server.config_version
    report = ReloadReport(
        server.config_version,
        {
            key: (display(SCHEMA[key], before), display(SCHEMA[key], after))
            for key, (before, after) in diff.items()
        },
        sorted(runtime),
        restart,
    )
    log.info(
        "configuration version %d: applied %s%s",
        report.version,
        ", ".join(report.applied) or "no changes",
        f"; restart needed for {', '.join(restart)}" if restart else "",
    )
    return report


def pending_restart(server: Server) -> dict[str, tuple[str, str]]:
    """Settings whose configured value waits for a restart: key -> (running, configured)."""
    loaded = server.loaded
    if loaded is None:
        return {}
    return {
        key: (display(SCHEMA[key], before), display(SCHEMA[key], after))
        for key, (before, after) in changes(server.config, loaded.config).items()
    }


class _Failure(Exception):
    """A step failed; the message says which and why."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _Failure):
        return str(exc)
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


# -- commit steps: (server, old config, new config, prepared TLS context) -> undo ------------

Step = Callable[["Server", ServerConfig, ServerConfig, ssl.SSLContext], Callable[[], None]]


def _tls(
    server: Server, old: ServerConfig, new: ServerConfig, tls: ssl.SSLContext
) -> Callable[[], None]:
    previous = server.tls_context
    server.tls_context = tls

    def undo() -> None:
        server.tls_context = previous

    return undo


def _logging(
    server: Server, old: ServerConfig, new: ServerConfig, tls: ssl.SSLContext
) -> Callable[[], None]:
    if old.log_level == new.log_level:
        return lambda: None
    logger = logging.getLogger("roost")
    previous = logger.level
    logger.setLevel(new.log_level.upper())
    return lambda: logger.setLevel(previous)


def _authenticator(
    server: Server, old: ServerConfig, new: ServerConfig, tls: ssl.SSLContext
) -> Callable[[], None]:
    if old.scram_iterations == new.scram_iterations:
        return lambda: None
    from roost.core.auth import Authenticator

    previous = server.auth
    server.auth = Authenticator(server.storage, new.scram_iterations)

    def undo() -> None:
        server.auth = previous

    return undo


def _config(
    server: Server, old: ServerConfig, new: ServerConfig, tls: ssl.SSLContext
) -> Callable[[], None]:
    server.config = new  # one assignment: readers see the old or the new, never a mixture

    def undo() -> None:
        server.config = old

    return undo


def _gates(
    server: Server, old: ServerConfig, new: ServerConfig, tls: ssl.SSLContext
) -> Callable[[], None]:
    from roost.gate import policy_of

    before, after = policy_of(old), policy_of(new)  # ValueError (rolled back) if inconsistent
    if before == after:
        return lambda: None
    server.gates.configure(after)
    return lambda: server.gates.configure(before)


#: The commit, in order. A new runtime setting whose holder caches it adds a step here.
_STEPS: Final[list[Step]] = [_tls, _logging, _authenticator, _gates, _config]
