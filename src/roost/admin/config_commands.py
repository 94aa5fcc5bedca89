"""``config get|set|unset|reload|status``: the configuration of the running node.

``config set KEY VALUE`` validates the value with the schema's conversion, writes it to the
runtime overrides (``overrides.toml`` in the data directory; they win over every other layer
and survive restarts), then reloads: a runtime setting takes effect at once, any other is
reported as needing a restart. If the reload fails the overrides file is restored, so the
node's state and the file never disagree. ``config unset KEY`` removes an override the same
way. See :mod:`roost.admin.reload` for what a reload does.

In a cluster, ``config set``, ``config unset`` and ``config status`` run on every node unless
``--node`` says where (:mod:`roost.admin.fanout`): each node validates, persists in its own
data directory and applies the override, and reports its configuration version and digest.
A node that was down during a ``set`` misses it, and ``config status`` shows it: its digest
differs from the others'; when it links again it takes the change from them
(:mod:`roost.admin.config_sync`). Settings that name or place one node
(:data:`~roost.admin.reload.NODE_SETTINGS`) are set with ``--node``, never cluster-wide.
``config get`` and ``config reload`` run where they are asked (``--all`` for every node).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roost.admin import render
from roost.admin.commands import Arg, CommandError, command
from roost.config.pipeline import OVERRIDES_FILE, SCHEMA, display

if TYPE_CHECKING:
    from roost.admin.reload import ReloadReport
    from roost.core.server import Server

KEYS = tuple(SCHEMA)  # for shell completion of KEY arguments


def _setting(key: str) -> Any:
    from roost.config.pipeline import _unknown

    setting = SCHEMA.get(key)
    if setting is None:
        raise CommandError("bad-arguments", _unknown(key))
    return setting


def _entry(node: Server, key: str) -> dict[str, Any]:
    setting = SCHEMA[key]
    running = getattr(node.config, setting.attribute)
    entry: dict[str, Any] = {
        "key": key,
        "value": display(setting, running),
        "layer": None,
        "where": None,
        "runtime": setting.runtime,
        "pending": None,
    }
    loaded = node.loaded
    if loaded is not None:
        origin = loaded.origin(key)
        entry["layer"], entry["where"] = origin.layer, origin.where or None
        if origin.value != running:
            entry["pending"] = display(setting, origin.value)  # configured, not yet running
    return entry


_GET_NODES = render.Table(
    [("key", "KEY"), ("value", "VALUE"), ("layer", "LAYER"), ("pending", "AFTER RESTART")]
)


def _render_get(result: Any) -> str:
    rows = result if isinstance(result, list) else [result]
    lines = []
    for row in rows:
        origin = row["layer"] or "?"
        if row["where"]:
            origin += f" ({row['where']})"
        pending = f"  [after restart: {row['pending']}]" if row["pending"] is not None else ""
        lines.append((row["key"], f"{row['value']}    # {origin}{pending}"))
    width = max(len(key) for key, _ in lines)
    return "\n".join(f"{key:<{width}} = {text}" for key, text in lines)


@command(
    "config get",
    "the running value of a setting and where it comes from (every setting without KEY)",
    Arg("key", "a setting, e.g. limits.max_stanza_size", required=False, hints=KEYS),
    render=_render_get,
    render_nodes=_GET_NODES.nodes,
    fanout=True,
)
async def config_get(node: Server, key: str | None) -> Any:
    if key is None:
        return [_entry(node, k) for k in SCHEMA]
    _setting(key)
    return _entry(node, key)


def _overrides_path(node: Server) -> Path:
    return node.config.data_dir / OVERRIDES_FILE


async def _change_override(node: Server, key: str, value: Any, text: str | None) -> dict[str, Any]:
    """Write one override (None removes it) and reload; restore the file on failure.

    A change made on every node of the cluster is recorded with its stamp (``text`` is the
    value as given, None for an unset), for nodes that missed it.
    """
    from roost.admin.config_sync import Stamp, record
    from roost.admin.fanout import everywhere
    from roost.admin.reload import lock

    async with lock(node):
        report = change_override(node, key, value)
        stamp = everywhere()
        if stamp is not None:
            record(node.config.data_dir, key, Stamp(stamp.time, stamp.node, text))
    path = _overrides_path(node)
    restart = key in report.restart_needed or key in _pending_keys(node)
    return {
        "key": key,
        "value": _entry(node, key)["pending" if restart else "value"],
        "applied": not restart,
        "restart_needed": restart,
        "overrides": str(path),
        "version": report.version,
        "digest": _digest(node),
    }


def change_override(node: Server, key: str, value: Any) -> ReloadReport:
    """Write one override (None removes it) and reload; on failure the overrides file is
    restored and CommandError raised. The caller holds the reload lock."""
    from roost.admin.reload import apply, candidate
    from roost.config.pipeline import write_overrides

    path = _overrides_path(node)
    previous = path.read_bytes() if path.exists() else None
    try:
        write_overrides(node.config.data_dir, {key: value})
    except OSError as exc:
        raise CommandError("failed", f"cannot write {path}: {exc.strerror}") from None
    try:
        report = apply(node, candidate(node))
    except BaseException:
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(previous)
        raise
    return report


def _pending_keys(node: Server) -> set[str]:
    from roost.admin.reload import pending_restart

    return set(pending_restart(node))


def _digest(node: Server) -> str:
    from roost.admin.reload import configured, digest

    return digest(configured(node))


def _render_change(result: dict[str, Any]) -> str:
    when = "takes effect after a restart" if result["restart_needed"] else "applied now"
    return (
        f"{result['key']} = {result['value']} ({when}; kept in {result['overrides']}; "
        f"config version {result['version']})"
    )


_CHANGE_NODES = render.Table(
    [
        ("key", "KEY"),
        ("value", "VALUE"),
        ("when", "EFFECT"),
        ("version", "VERSION"),
        ("digest", "DIGEST"),
    ],
    row=lambda row: {**row, "when": "after restart" if row["restart_needed"] else "applied"},
)


@command(
    "config set",
    "set a runtime override (persisted; applied at once when the setting allows)",
    Arg("key", "a setting, e.g. limits.max_stanza_size", hints=KEYS),
    Arg("value", "its new value, as in ROOST_* variables (lists comma-separated)"),
    render=_render_change,
    render_nodes=_CHANGE_NODES.nodes,
    audit=True,
    fanout=True,
    cluster=True,
)
async def config_set(node: Server, key: str, value: str) -> dict[str, Any]:
    from roost.config.pipeline import convert

    setting = _setting(key)
    if key == "server.data_dir":
        raise CommandError(
            "bad-arguments",
            "server.data_dir holds the overrides; set it with --data-dir or ROOST_SERVER__DATA_DIR",
        )
    try:
        typed = convert(setting, value)
    except ValueError as exc:
        raise CommandError("bad-arguments", f"{key}: {exc}") from None
    if typed is None:
        raise CommandError("bad-arguments", f"{key}: use `config unset {key}` to remove it")
    _one_node(key)
    return await _change_override(node, key, typed, value)


def _one_node(key: str) -> None:
    from roost.admin.fanout import everywhere
    from roost.admin.reload import NODE_SETTINGS

    if key in NODE_SETTINGS and everywhere() is not None:
        raise CommandError(
            "bad-target", f"{key} names or places one node: change it with --node NAME"
        )


@command(
    "config unset",
    "remove a runtime override (the value of the lower layers comes back)",
    Arg("key", "a setting with an override", hints=KEYS),
    render=_render_change,
    render_nodes=_CHANGE_NODES.nodes,
    audit=True,
    fanout=True,
    cluster=True,
    found_anywhere=True,
)
async def config_unset(node: Server, key: str) -> dict[str, Any]:
    from roost.config.pipeline import file_layer

    _setting(key)
    path = _overrides_path(node)
    current, _ = file_layer(path, "override") if path.exists() else ({}, [])
    _one_node(key)
    loaded = node.loaded
    running = loaded is not None and loaded.origin(key).layer == "override"
    if key not in current and not running:  # (another node on this data directory removed it)
        raise CommandError("not-found", f"{key} has no runtime override")
    return await _change_override(node, key, None, None)


def _render_reload(result: dict[str, Any]) -> str:
    if not result["changed"]:
        return f"no changes (config version {result['version']}); TLS certificate reloaded"
    lines = [f"config version {result['version']}"]
    for key, (old, new) in result["changed"].items():
        state = "restart needed" if key in result["restart_needed"] else "applied"
        lines.append(f"  {key}: {old} -> {new} ({state})")
    return "\n".join(lines)


@command(
    "config reload",
    "read the configuration again and apply what can change at run time (as SIGHUP does)",
    render=_render_reload,
    audit=True,
    fanout=True,
)
async def config_reload(node: Server) -> dict[str, Any]:
    from roost.admin.reload import reload

    return (await reload(node)).as_json()


def _render_status(result: dict[str, Any]) -> str:
    items: list[tuple[str, Any]] = [
        ("config version", result["version"]),
        ("digest", result["digest"]),
    ]
    for file in result["files"]:
        items.append(("file", file))
    overrides = result["overrides"]
    items.append(("overrides", ", ".join(f"{k} = {v}" for k, v in overrides.items()) or "none"))
    pending = result["pending_restart"]
    items.append(
        (
            "restart needed",
            ", ".join(f"{k} ({old} -> {new})" for k, (old, new) in pending.items()) or "no",
        )
    )
    return render.pairs(items)


_STATUS_NODES = render.Table(
    [
        ("version", "VERSION"),
        ("digest", "DIGEST"),
        ("overrides", "OVERRIDES"),
        ("pending_restart", "RESTART NEEDED"),
    ],
    row=lambda row: {
        **row,
        "overrides": ", ".join(f"{k} = {v}" for k, v in row["overrides"].items()) or None,
        "pending_restart": ", ".join(row["pending_restart"]) or None,
    },
)


def drift(results: Mapping[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The nodes by configuration digest: more than one key is drift."""
    by_digest: dict[str, list[str]] = {}
    for node, result in sorted(results.items()):
        by_digest.setdefault(result["digest"], []).append(node)
    return by_digest


def _render_status_nodes(results: Mapping[str, dict[str, Any]]) -> str:
    table = _STATUS_NODES.nodes(results)
    by_digest = drift(results)
    if len(by_digest) <= 1:
        return f"{table}\n\nthe nodes are configured alike (digest {next(iter(by_digest), '-')})"
    ranked = sorted(by_digest.items(), key=lambda item: (-len(item[1]), item[0]))
    lines = [f"{table}", "", f"drift: {len(by_digest)} configurations in the cluster"]
    lines += [f"  {digest}: {', '.join(nodes)}" for digest, nodes in ranked]
    return "\n".join(lines)


@command(
    "config status",
    "the configuration version and digest, its files, overrides, pending restarts",
    render=_render_status,
    render_nodes=_render_status_nodes,
    fanout=True,
    cluster=True,
)
async def config_status(node: Server) -> dict[str, Any]:
    from roost.admin.reload import pending_restart
    from roost.config.pipeline import file_layer

    path = _overrides_path(node)
    overrides: dict[str, str] = {}
    if path.exists():
        values, _ = file_layer(path, "override")
        overrides = {key: display(SCHEMA[key], v.value) for key, v in values.items()}
    loaded = node.loaded
    return {
        "version": node.config_version,
        "digest": _digest(node),
        "files": [str(f) for f in loaded.files] if loaded is not None else [],
        "overrides": overrides,
        "pending_restart": {k: list(v) for k, v in pending_restart(node).items()},
    }
