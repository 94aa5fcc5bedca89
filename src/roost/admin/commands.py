"""The admin commands: one registry serving ``roost ctl``, the shell and, later, an HTTP API.

A command is declared once, with :func:`command`::

    @command("kick", "disconnect a user's sessions",
             Arg("jid", "a full JID (one session) or a bare JID (all of them)"),
             audit=True)
    async def kick(node: Server, jid: str) -> list[str]:
        ...

Its handler gets the node it runs on and the arguments by name, and returns JSON-able data
(or raises :class:`CommandError`). Everything else derives from the declaration: ``roost
ctl`` builds its argparse sub-parsers from the arguments (so help and usage errors say what
is expected), the node validates what arrives over the control channel against them, and
the shell offers every command as a coroutine function (``await ctl.kick("alice@localhost")``).
An optional ``render`` turns the result into text for people; ``--json`` prints the data.

Commands with a space in their name form groups (``user add``, ``config set``). Adding a
command is one decorated function in any module listed in :data:`COMMAND_MODULES`.

Commands run on one node. Across a cluster (:mod:`roost.admin.fanout`), ``--node NAME`` and
``--all`` run the same handler on other nodes over the mesh and aggregate the JSON results by
node. Only commands declared ``fanout=True`` may run elsewhere: those whose meaning is per node
(what this node holds or runs) or the same on every node. ``cluster=True`` makes a command
cluster-wide by default on a clustered node (``config set``: an override applies everywhere;
``kick``: wherever the user's sessions are). ``found_anywhere=True`` says that across nodes a
``not-found`` on some of them is no failure when another node found what it looked for (the
sessions ``kick`` ends are on one node or a few). ``evaluates=True`` marks a command that runs
code given to it (``bench``): like the shell, never served over the network.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from roost.core.server import Server

#: Modules whose import registers commands.
COMMAND_MODULES: Final = (
    "roost.admin.builtin",
    "roost.admin.config_commands",
    "roost.admin.cluster_commands",
    "roost.admin.bench_commands",
    "roost.admin.gate_commands",
)

#: What the groups of commands (the first word of ``user add``) are about, for help.
GROUPS: Final = {
    "user": "manage accounts on the live node",
    "config": "the running configuration: get, set, reload",
    "gate": "override a gate (circuit breaker) cluster-wide, or hand it back to its policies",
}


class CommandError(Exception):
    """A command failed; ``code`` is one of :data:`roost.admin.protocol.ERRORS`."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra  # more JSON-able fields of the error (a shell's captured output)


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of a command."""

    name: str
    help: str
    type: type = str  # str, int, float or bool
    required: bool = True
    flag: bool = False  # ``--name VALUE`` (``--name`` for a bool) rather than positional
    choices: tuple[str, ...] | None = None
    secret: bool = False  # asked for by the CLI when not given, never echoed
    default: Any = None
    hints: tuple[str, ...] = ()  # likely values, for shell completion (not enforced)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` as received over the channel, validated. Raises CommandError."""
        kind = self.type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CommandError(
                "bad-arguments", f"'{self.name}' must be a {_TYPE_NAMES[kind]}, got {value!r}"
            )
        if self.choices is not None and value not in self.choices:
            raise CommandError(
                "bad-arguments", f"'{self.name}' must be one of {', '.join(self.choices)}"
            )
        return value


_TYPE_NAMES: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
}

Handler = Callable[..., Awaitable[Any]]
Renderer = Callable[[Any], str]
NodesRenderer = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # "status", "user add"
    help: str
    args: tuple[Arg, ...]
    handler: Handler
    render: Renderer | None = None
    audit: bool = False  # changes state: recorded in the audit log
    fanout: bool = False  # may run on other nodes of the cluster (--node, --all)
    cluster: bool = False  # on a clustered node, runs on every node unless --node says where
    found_anywhere: bool = False  # across nodes, not-found somewhere is fine if found elsewhere
    render_nodes: NodesRenderer | None = None  # {node: result} of the nodes that answered
    evaluates: bool = False  # runs code given to it: never over the network (admin.listen)

    @property
    def function_name(self) -> str:
        """Its name in the shell's ``ctl`` namespace: ``user add`` -> ``user_add``."""
        return self.name.replace(" ", "_")

    def bind(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate arguments received by name. Raises CommandError("bad-arguments")."""
        known = {arg.name: arg for arg in self.args}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise CommandError(
                "bad-arguments", f"{self.name}: unknown argument {', '.join(map(repr, unknown))}"
            )
        bound: dict[str, Any] = {}
        for arg in self.args:
            value = raw.get(arg.name)
            if value is None:
                if arg.required:
                    raise CommandError("bad-arguments", f"{self.name}: '{arg.name}' is required")
                bound[arg.name] = False if arg.type is bool else arg.default
                continue
            bound[arg.name] = arg.check(value)
        return bound

    async def run(self, node: Server, raw: Mapping[str, Any]) -> Any:
        return await self.handler(node, **self.bind(raw))


_REGISTRY: dict[str, Command] = {}
_loaded = False


def command(
    name: str,
    help: str,
    *args: Arg,
    render: Renderer | None = None,
    audit: bool = False,
    fanout: bool = False,
    cluster: bool = False,
    found_anywhere: bool = False,
    render_nodes: NodesRenderer | None = None,
    evaluates: bool = False,
) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine function as the admin command ``name``.

    ``render_nodes`` defaults to the ``nodes`` method of ``render`` when it has one (a
    :class:`roost.admin.render.Table` renders one result or a table with a node column).
    """
    if cluster and not fanout:
        raise ValueError(f"{name!r}: a cluster-wide command must allow fan-out")
    if render_nodes is None:
        render_nodes = getattr(render, "nodes", None)

    def register(handler: Handler) -> Handler:
        if name in _REGISTRY and _REGISTRY[name].handler is not handler:
            raise ValueError(f"two admin commands are named {name!r}")
        _REGISTRY[name] = Command(
            name,
            help,
            args,
            handler,
            render,
            audit,
            fanout,
            cluster,
            found_anywhere,
            render_nodes,
            evaluates,
        )
        return handler

    return register


def registry() -> dict[str, Command]:
    """Every command, by name (importing the modules that declare them once)."""
    global _loaded
    if not _loaded:
        for module in COMMAND_MODULES:
            importlib.import_module(module)
        _loaded = True
    return _REGISTRY


def find(name: str) -> Command:
    commands = registry()
    found = commands.get(name)
    if found is None:
        close = difflib.get_close_matches(name, commands, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise CommandError("unknown-command", f"unknown command '{name}'{hint}")
    return found
