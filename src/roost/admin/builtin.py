"""The node's admin commands: status, sessions, kick, users, stop.

The configuration commands are in :mod:`roost.admin.config_commands`, ``nodes`` and ``groups``
in :mod:`roost.admin.cluster_commands`. Imports of the server's
parts happen inside handlers, so that ``roost ctl --help`` stays instant.

``kick`` ends streams with ``<policy-violation/>`` (RFC 6120 §4.9.3.14: "the entity has
violated some local service policy"), the text saying an administrator did it, rather than
``<conflict/>``, which tells a client that another session of the same resource replaced it
(§4.9.3.3) and makes some clients stop reconnecting for the wrong reason. A kicked session
with stream management ends for good: it cannot be resumed, and what it had not
acknowledged is routed elsewhere as for any ended session.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from roost.admin import render
from roost.admin.commands import Arg, CommandError, command

if TYPE_CHECKING:
    from roost.core.server import Server
    from roost.xmpp.jid import JID

KICK_TEXT = "disconnected by an administrator"


def node_name() -> str:
    return socket.gethostname()


def status_of(node: Server) -> dict[str, Any]:
    from roost.admin.fanout import node_name as name_of
    from roost.admin.reload import configured, digest

    stats = node.statistics()
    return {
        "node": name_of(node),
        "pid": os.getpid(),
        "version": stats["version"],
        "domain": stats["domain"],
        "uptime": round(stats["uptime"], 1),
        "sessions": stats["sessions"],
        "users_online": stats["users"],
        "connections": stats["connections"],
        "detached": node.resumption.detached_count,
        "config_version": node.config_version,
        "config_digest": digest(configured(node)),
        **node.control.monitor.snapshot(),
    }


def _render_status(result: dict[str, Any]) -> str:
    lag = result["loop_lag_ms"]
    return render.pairs(
        [
            ("node", f"{result['node']} (pid {result['pid']})"),
            ("version", result["version"]),
            ("domain", result["domain"]),
            ("uptime", render.duration(result["uptime"])),
            ("sessions", f"{result['sessions']} ({result['users_online']} users online)"),
            ("connections", result["connections"]),
            ("detached", result["detached"]),
            ("memory (RSS)", render.size(result["memory_rss"])),
            (
                "event-loop lag",
                "not measured yet"
                if lag is None
                else f"{lag:g} ms (max {result['loop_lag_max_ms']:g} ms in the last minute)",
            ),
            (
                "messages/s",
                f"{result['messages_per_second']:g} "
                f"(stanzas/s {result['stanzas_per_second']:g}; "
                f"{result['messages_total']} messages since start)",
            ),
            ("config version", f"{result['config_version']} (digest {result['config_digest']})"),
        ]
    )


def _status_row(result: Mapping[str, Any]) -> dict[str, Any]:
    lag = result["loop_lag_ms"]
    return {
        **result,
        "uptime": render.duration(result["uptime"]),
        "memory_rss": render.size(result["memory_rss"]),
        "loop_lag_ms": None if lag is None else f"{lag:g} ms",
        "config": f"{result['config_version']} {result['config_digest']}",
    }


_STATUS_NODES = render.Table(
    [
        ("pid", "PID"),
        ("version", "VERSION"),
        ("uptime", "UPTIME"),
        ("sessions", "SESSIONS"),
        ("connections", "CONNECTIONS"),
        ("memory_rss", "RSS"),
        ("loop_lag_ms", "LAG"),
        ("messages_per_second", "MSG/S"),
        ("config", "CONFIG"),
    ],
    row=_status_row,
)


@command(
    "status",
    "the node's health: uptime, sessions, load, memory",
    render=_render_status,
    render_nodes=_STATUS_NODES.nodes,
    fanout=True,
)
async def status(node: Server) -> dict[str, Any]:
    return status_of(node)


def _jid(text: str) -> JID:
    from roost.xmpp.jid import InvalidJID, parse_jid

    try:
        jid = parse_jid(text)
    except InvalidJID as exc:
        raise CommandError("bad-arguments", f"invalid JID {text!r}: {exc}") from None
    if jid.local is None:
        raise CommandError("bad-arguments", f"{text!r} is not a user's JID (user@domain)")
    return jid


def _routes(node: Server, jid: JID) -> list[Any]:
    if jid.resource is not None:
        route = node.sessions.get(jid)
        return [] if route is None else [route]
    return sorted(node.sessions.routes(jid.bare_str), key=lambda r: str(r.jid))


def session_info(route: Any, now: float) -> dict[str, Any]:
    """What `roost ctl sessions` shows of one session (route)."""
    from roost.c2s.session import C2SSession

    info: dict[str, Any] = {
        "jid": str(route.jid),
        "ip": None,
        "tls": None,
        "available": route.available,
        "priority": route.priority,
        "sm": None,
        "idle": None,
    }
    if isinstance(route, C2SSession):
        connection = route.connection
        sm = route.sm
        if sm is None:
            info["sm"] = "off"
        elif sm.resume and connection.closing:
            info["sm"] = "detached"
        else:
            info["sm"] = "resumable" if sm.resume else "on"
        peer = connection.peer
        info["ip"] = None if peer == "?" else peer.rsplit(":", 1)[0]
        info["tls"] = connection.tls_version
        info["idle"] = round(max(0.0, now - connection.last_received), 1)
    return info


_SESSIONS = render.Table(
    [
        ("jid", "JID"),
        ("ip", "IP"),
        ("tls", "TLS"),
        ("available", "AVAILABLE"),
        ("priority", "PRIORITY"),
        ("sm", "SM"),
        ("idle", "IDLE"),
    ],
    row=lambda row: {**row, "idle": None if row["idle"] is None else f"{row['idle']:g}s"},
)


@command(
    "sessions",
    "the client sessions on this node",
    Arg("user", "only this user's sessions (a bare or full JID)", required=False, flag=True),
    render=_SESSIONS,
    fanout=True,
)
async def sessions(node: Server, user: str | None) -> list[dict[str, Any]]:
    import asyncio

    now = asyncio.get_running_loop().time()
    if user is not None:
        routes = _routes(node, _jid(user))
    else:
        routes = sorted(node.sessions, key=lambda r: str(r.jid))
    return [session_info(route, now) for route in routes]


def kick_routes(routes: list[Any], text: str) -> list[str]:
    from roost.c2s.session import C2SSession
    from roost.xmpp.errors import StreamError

    kicked = []
    for route in routes:
        if not isinstance(route, C2SSession):
            continue
        sm = route.sm
        if sm is not None and sm.resume and route.connection.closing:
            route.expire()  # detached: nobody to tell; end it as if its window had closed
        else:
            route.stream_error(StreamError("policy-violation", text))
        kicked.append(str(route.jid))
    return kicked


@command(
    "kick",
    "disconnect sessions with <policy-violation/>",
    Arg("jid", "a full JID (that session) or a bare JID (all the user's sessions)"),
    Arg("reason", "text sent with the stream error", required=False, flag=True),
    render=lambda kicked: "\n".join(f"kicked {jid}" for jid in kicked),
    render_nodes=lambda results: "\n".join(
        f"kicked {jid} (on {node})" for node, kicked in sorted(results.items()) for jid in kicked
    ),
    audit=True,
    fanout=True,
    cluster=True,
    found_anywhere=True,
)
async def kick(node: Server, jid: str, reason: str | None) -> list[str]:
    target = _jid(jid)
    kicked = kick_routes(_routes(node, target), reason or KICK_TEXT)
    if not kicked:
        raise CommandError("not-found", f"no session of {target} on this node")
    return kicked


@command(
    "stop",
    "stop the node cleanly (streams closed, storage flushed); returns once it stopped",
    render=lambda result: f"node stopped (pid {result['pid']})",
    render_nodes=lambda results: "\n".join(
        f"{node} {'stopped' if result.get('stopped', True) else 'stopping'} (pid {result['pid']})"
        for node, result in sorted(results.items())
    ),
    audit=True,
    fanout=True,
)
async def stop(node: Server) -> dict[str, Any]:
    node.request_stop()
    return {"stopping": True, "pid": os.getpid()}


# -- users --------------------------------------------------------------------------------------


@command(
    "user add",
    "create an account",
    Arg("jid", "the account, e.g. alice@localhost"),
    Arg("password", "its password (asked for when omitted)", flag=True, secret=True),
    render=lambda result: f"created {result['jid']}",
    audit=True,
)
async def user_add(node: Server, jid: str, password: str) -> dict[str, Any]:
    bare = _bare(node, jid)
    try:
        created = await node.auth.create_user(bare, password)
    except ValueError as exc:
        raise CommandError("bad-arguments", str(exc)) from None
    if not created:
        raise CommandError("exists", f"{bare} already exists")
    return {"jid": bare}


@command(
    "user del",
    "delete an account and all its data (its sessions are kicked first)",
    Arg("jid", "the account"),
    render=lambda result: f"deleted {result['jid']}",
    audit=True,
)
async def user_del(node: Server, jid: str) -> dict[str, Any]:
    bare = _bare(node, jid)
    if not await node.storage.user_exists(bare):
        raise CommandError("not-found", f"no such user {bare}")
    kicked = kick_routes(node.sessions.routes(bare), "the account was deleted")
    await node.settle()  # the sessions' goodbyes (presence, roster) before the data goes
    await node.storage.delete_user(bare)
    return {"jid": bare, "kicked": kicked}


@command(
    "user list",
    "list accounts",
    Arg("domain", "only this domain", required=False, flag=True),
    render=lambda users: "\n".join(users) or "(none)",
    render_nodes=lambda results: render.table(
        [{"node": node, "jid": jid} for node, users in sorted(results.items()) for jid in users],
        [("node", "NODE"), ("jid", "JID")],
    ),
    fanout=True,
)
async def user_list(node: Server, domain: str | None) -> list[str]:
    return list(await node.storage.list_users(domain))


@command(
    "user passwd",
    "set an account's password",
    Arg("jid", "the account"),
    Arg("password", "the new password (asked for when omitted)", flag=True, secret=True),
    render=lambda result: f"password changed for {result['jid']}",
    audit=True,
)
async def user_passwd(node: Server, jid: str, password: str) -> dict[str, Any]:
    bare = _bare(node, jid)
    try:
        changed = await node.auth.set_password(bare, password)
    except ValueError as exc:
        raise CommandError("bad-arguments", str(exc)) from None
    if not changed:
        raise CommandError("not-found", f"no such user {bare}")
    return {"jid": bare}


def _bare(node: Server, text: str) -> str:
    jid = _jid(text)
    if jid.resource is not None:
        raise CommandError("bad-arguments", f"{text!r}: an account is a bare JID (user@domain)")
    if jid.domain != node.domain:
        raise CommandError("bad-arguments", f"{jid.domain} is not served here ({node.domain} is)")
    return jid.bare_str
