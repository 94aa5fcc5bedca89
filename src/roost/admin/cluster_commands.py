"""``nodes`` and ``groups``: the cluster as one node sees it.

Both read what the node holds in memory and ask no other node, so they answer even when the
cluster is partitioned, and show the partition: ``nodes`` lists every node this one knows of
with the state of its link, ``groups`` the process groups (:mod:`roost.cluster.pg`) of every
scope, with the members this node sees and which node holds them. ``--all`` puts the views of
all the nodes side by side; two nodes that disagree are what it is for.

A node on its own is a cluster of one: ``nodes`` lists it, ``groups`` lists nothing.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from roost.admin import render
from roost.admin.commands import Arg, CommandError, command
from roost.admin.fanout import node_name

if TYPE_CHECKING:
    from roost.core.server import Server

SAMPLE: Final = 5  # members shown per group


def _node_row(row: Mapping[str, Any]) -> dict[str, Any]:
    link = row["link"]
    if link == "up":
        link = f"up {render.duration(row['up_for'])}"
    return {
        **row,
        "self": "*" if row["self"] else "",
        "link": link,
        "rtt": None if row["rtt"] is None else f"{row['rtt'] * 1000:.1f} ms",
        "uptime": None if row["uptime"] is None else render.duration(row["uptime"]),
    }


_NODES = render.Table(
    [
        ("self", ""),
        ("name", "NODE"),
        ("address", "ADDRESS"),
        ("link", "LINK"),
        ("rtt", "RTT"),
        ("sessions", "SESSIONS"),
        ("pid", "PID"),
        ("version", "VERSION"),
        ("uptime", "UPTIME"),
    ],
    row=_node_row,
)


@command(
    "nodes",
    "the nodes of the cluster as this node sees them: address, link, sessions",
    render=_NODES,
    render_nodes=lambda results: render.Table(
        [("name", "SEES"), *_NODES.columns[2:6]], row=_node_row
    ).nodes(results),
    fanout=True,
)
async def nodes(node: Server) -> list[dict[str, Any]]:
    stats = node.statistics()
    me: dict[str, Any] = {
        "name": node_name(node),
        "self": True,
        "address": None,
        "link": "self",
        "up_for": None,
        "rtt": None,
        "sessions": len(node.sessions),
        "pid": os.getpid(),
        "version": stats["version"],
        "uptime": round(stats["uptime"], 1),
        "incarnation": None,
    }
    cluster = node.cluster
    if cluster is None:
        return [me]
    from roost.cluster.mesh_types import format_address

    mesh = cluster.mesh
    me["address"] = format_address(mesh.address)
    me["incarnation"] = mesh.incarnation
    links = mesh.statistics().links
    sessions = cluster.registry.count_by_node()
    rows = [me]
    for name, address in sorted(mesh.members().items()):
        link = links.get(name)
        rows.append(
            {
                "name": name,
                "self": False,
                "address": None if address is None else format_address(address),
                "link": "down" if link is None else "up",
                "up_for": None if link is None else round(link.up_for, 1),
                "rtt": None if link is None else link.rtt,
                "sessions": sessions.get(name, 0),
                "pid": None,
                "version": None,
                "uptime": None,
                "incarnation": None if link is None else link.incarnation,
            }
        )
    return rows


_SCOPES = render.Table(
    [
        ("scope", "SCOPE"),
        ("groups", "GROUPS"),
        ("local_groups", "LOCAL GROUPS"),
        ("local_members", "LOCAL MEMBERS"),
        ("remote_members", "REMOTE MEMBERS"),
        ("peers", "PEERS"),
    ],
    row=lambda row: {
        **row,
        "remote_members": sum(row["peers"].values()),
        "peers": ", ".join(row["peers"]) or None,
    },
)

_GROUPS = render.Table(
    [
        ("group", "GROUP"),
        ("members", "MEMBERS"),
        ("by_node", "BY NODE"),
        ("sample", "SAMPLE"),
    ],
    row=lambda row: {
        **row,
        "by_node": " ".join(f"{node}:{count}" for node, count in row["by_node"].items()),
        "sample": " ".join(render.cell(m) for m in row["sample"])
        + (" ..." if row["members"] > len(row["sample"]) else ""),
    },
)


def _groups_table(result: list[dict[str, Any]]) -> render.Table:
    return _GROUPS if result and "group" in result[0] else _SCOPES


def _render_groups(result: list[dict[str, Any]]) -> str:
    return _groups_table(result)(result)


def _render_groups_nodes(results: Mapping[str, list[dict[str, Any]]]) -> str:
    first = next((rows for rows in results.values() if rows), [])
    return _groups_table(first).nodes(results)


@command(
    "groups",
    "process-group scopes with their sizes; with SCOPE, its largest groups and their members",
    Arg("scope", "a scope, e.g. sessions", required=False, hints=("sessions",)),
    Arg(
        "limit",
        "how many groups to show, largest first (default 50)",
        type=int,
        flag=True,
        required=False,
        default=50,
    ),
    render=_render_groups,
    render_nodes=_render_groups_nodes,
    fanout=True,
)
async def groups(node: Server, scope: str | None, limit: int) -> list[dict[str, Any]]:
    from roost.cluster.pg_driver import drivers

    if limit < 1:
        raise CommandError("bad-arguments", "'limit' must be at least 1")
    running = drivers(node.cluster.mesh) if node.cluster is not None else {}
    if scope is None:
        return [driver.scope.statistics() for driver in running.values()]
    driver = running.get(scope)
    if driver is None:
        known = ", ".join(running) or "none: this node is not in a cluster"
        raise CommandError("not-found", f"no scope {scope!r} here (scopes: {known})")
    pg = driver.scope
    # Counted from the owners' multisets: no member tuple is built for groups not shown.
    owners = {group: pg.owners(group) for group in pg.which_groups()}
    largest = heapq.nsmallest(
        limit, owners, key=lambda group: (-sum(owners[group].values()), str(group))
    )
    return [
        {
            "group": group,
            "members": sum(owners[group].values()),
            "by_node": dict(sorted(owners[group].items())),
            "sample": list(pg.members(group)[:SAMPLE]),
        }
        for group in largest
    ]
