"""``roost user``: manage accounts in a data directory.

These commands open the store directly, so they work whether or not a server is running on
the same data directory (SQLite in WAL mode lets both write safely). Passwords given with
``--password`` end up in shell history; without it, the command asks for one.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any

from roost.cli.common import add_data_dir


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("user", help="manage accounts")
    commands = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = commands.add_parser("add", help="create an account")
    add.add_argument("jid", help="the account's JID, e.g. alice@localhost")
    add.add_argument("--password", help="its password (asked for when omitted)")
    add_data_dir(add)
    add.set_defaults(handler=_add)

    lst = commands.add_parser("list", help="list accounts")
    lst.add_argument("--domain", help="only this domain")
    add_data_dir(lst)
    lst.set_defaults(handler=_list)

    delete = commands.add_parser("del", help="delete an account and all its data")
    delete.add_argument("jid")
    add_data_dir(delete)
    delete.set_defaults(handler=_del)

    passwd = commands.add_parser("passwd", help="set an account's password")
    passwd.add_argument("jid")
    passwd.add_argument("--password", help="the new password (asked for when omitted)")
    add_data_dir(passwd)
    passwd.set_defaults(handler=_passwd)


def _bare(text: str) -> str:
    from roost.xmpp.jid import InvalidJID, parse_jid

    try:
        jid = parse_jid(text)
    except InvalidJID as exc:
        raise SystemExit(f"roost: invalid JID {text!r}: {exc}") from None
    if jid.local is None:
        raise SystemExit(f"roost: {text!r} has no user name (expected user@domain)")
    return jid.bare_str


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise SystemExit("roost: no password given")
        return line
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("roost: the passwords differ")
    if not first:
        raise SystemExit("roost: empty password")
    return first


async def _with_auth(data_dir: Path, action: Any) -> Any:
    """Run ``action`` on the deployment's store: the one its configuration names (the file in
    the data directory, the environment, runtime overrides), so that a deployment on
    PostgreSQL is managed there and not in a stray SQLite file."""
    from roost.config.pipeline import ConfigError, build
    from roost.core.auth import Authenticator
    from roost.storage import StorageError, open_storage

    try:
        config = build(flags={"server.data_dir": (str(data_dir), "--data-dir")}).config
    except ConfigError as exc:
        raise SystemExit(f"roost: {exc}") from None
    storage = open_storage(data_dir, url=config.storage_url)
    try:
        await storage.open()
    except StorageError as exc:
        raise SystemExit(f"roost: cannot open the store: {exc}") from None
    try:
        return await action(storage, Authenticator(storage, config.scram_iterations))
    finally:
        await storage.close()


def _add(args: argparse.Namespace) -> int:
    jid = _bare(args.jid)
    password = _password(args)

    async def action(storage: Any, auth: Any) -> bool:
        return bool(await auth.create_user(jid, password))

    try:
        created = asyncio.run(_with_auth(args.data_dir, action))
    except ValueError as exc:
        print(f"roost: {exc}", file=sys.stderr)
        return 1
    if not created:
        print(f"roost: {jid} already exists", file=sys.stderr)
        return 1
    print(f"created {jid}")
    return 0


def _list(args: argparse.Namespace) -> int:
    async def action(storage: Any, auth: Any) -> list[str]:
        return list(await storage.list_users(args.domain))

    for jid in asyncio.run(_with_auth(args.data_dir, action)):
        print(jid)
    return 0


def _del(args: argparse.Namespace) -> int:
    jid = _bare(args.jid)

    async def action(storage: Any, auth: Any) -> bool:
        return bool(await storage.delete_user(jid))

    if not asyncio.run(_with_auth(args.data_dir, action)):
        print(f"roost: no such user {jid}", file=sys.stderr)
        return 1
    print(f"deleted {jid}")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    jid = _bare(args.jid)
    password = _password(args)

    async def action(storage: Any, auth: Any) -> bool:
        return bool(await auth.set_password(jid, password))

    try:
        changed = asyncio.run(_with_auth(args.data_dir, action))
    except ValueError as exc:
        print(f"roost: {exc}", file=sys.stderr)
        return 1
    if not changed:
        print(f"roost: no such user {jid}", file=sys.stderr)
        return 1
    print(f"password changed for {jid}")
    return 0
