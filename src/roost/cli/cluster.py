"""``roost cluster``: the cluster's certificate authority.

``roost cluster init`` makes a data directory the home of a new cluster: a CA and this node's
certificate. ``roost cluster issue NAME`` signs a certificate for another node (or, with
``--admin``, an administrator's client certificate), in a directory to copy to that machine as
its data directory's ``cluster/``. See :mod:`roost.cluster.ca` for what the certificates hold.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Any

from roost.cli.common import add_data_dir


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "cluster", help="cluster certificates (the CA, node and admin certificates)"
    )
    commands = parser.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)

    init = commands.add_parser("init", help="create the cluster CA and this node's certificate")
    init.add_argument(
        "--node",
        metavar="NAME",
        help="this node's name (default: the host name's first label)",
    )
    init.add_argument(
        "--force", action="store_true", help="replace an existing CA (cuts off every node)"
    )
    add_data_dir(init)
    init.set_defaults(handler=_init)

    issue = commands.add_parser("issue", help="issue a certificate for another node")
    issue.add_argument("name", metavar="NAME", help="the node's (or administrator's) name")
    issue.add_argument(
        "--admin",
        action="store_true",
        help="an administrator's client certificate (for remote `roost ctl`), not a node's",
    )
    issue.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where to write it (default: DATA_DIR/cluster/nodes/NAME, or admins/NAME)",
    )
    issue.add_argument("--force", action="store_true", help="replace a certificate in DIR")
    add_data_dir(issue)
    issue.set_defaults(handler=_issue)


def _default_node() -> str:
    return socket.gethostname().split(".")[0] or "node1"


def _init(args: argparse.Namespace) -> int:
    from roost.cluster.ca import CAError, cluster_dir, init_cluster

    node = args.node or _default_node()
    try:
        files = init_cluster(args.data_dir, node, force=args.force)
    except CAError as exc:
        print(f"roost: {exc}", file=sys.stderr)
        return 1
    directory = cluster_dir(args.data_dir)
    print(f"created a cluster CA in {directory}: ca.pem, and ca-key.pem (keep it private)")
    print(f"issued node {node!r}: {files.cert.name}, {files.key.name}")
    print(f"add nodes with: roost cluster issue NAME --data-dir {args.data_dir}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from roost.cluster.ca import CAError, issue

    try:
        issued = issue(args.data_dir, args.name, admin=args.admin, out=args.out, force=args.force)
    except CAError as exc:
        print(f"roost: {exc}", file=sys.stderr)
        return 1
    kind = "administrator" if args.admin else "node"
    files = ", ".join(p.name for p in (issued.cert, issued.key, issued.ca))
    print(f"issued {kind} {args.name!r} in {issued.directory}: {files}")
    print(f"valid until {issued.not_after:%Y-%m-%d}")
    if args.admin:
        print("give these files to the administrator; the key is theirs alone")
    else:
        print(f"copy {issued.directory} to that node's data directory as cluster/")
    return 0
