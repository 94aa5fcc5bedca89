"""``roost storage``: operations on a deployment's store as a whole.

``migrate --to URL`` copies the SQLite store of a data directory into a PostgreSQL database
(:mod:`roost.storage.transfer`): every account with its credentials, roster, offline messages,
vCard, blocklist, archive and archiving preferences. It refuses a database that already holds
data unless ``--force`` (which replaces it), and prints what it copied. Then set
``storage.url`` to the same URL and restart the nodes. A password in the URL is visible to
other users of the machine (``ps``); PGPASSWORD or ~/.pgpass keep it out of the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from roost.cli.common import add_data_dir


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "storage", help="move a deployment's data between storage backends"
    )
    commands = parser.add_subparsers(dest="storage_command", metavar="ACTION", required=True)

    migrate = commands.add_parser(
        "migrate",
        help="copy a data directory's SQLite store into PostgreSQL",
        description="Copy the SQLite store of a data directory into a PostgreSQL database, "
        "in one transaction. Stop the server first: what it writes during the copy is not "
        "copied.",
    )
    migrate.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the target database, e.g. postgresql://roost@db.example.org:5432/roost",
    )
    migrate.add_argument(
        "--force", action="store_true", help="replace whatever the target database holds"
    )
    add_data_dir(migrate)
    migrate.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    from roost.storage import DATABASE_FILE, StorageError
    from roost.storage.postgres import URL_SCHEMES, redact_url
    from roost.storage.transfer import TargetNotEmpty, copy_sqlite_to_postgres

    url: str = args.to
    if url.partition("://")[0].lower() not in URL_SCHEMES:
        print(f"roost: --to must be a postgresql:// URL, not {redact_url(url)!r}", file=sys.stderr)
        return 2
    source = args.data_dir / DATABASE_FILE
    try:
        copied = asyncio.run(copy_sqlite_to_postgres(source, url, force=args.force))
    except TargetNotEmpty as exc:
        print(f"roost: {exc}; --force replaces what it holds", file=sys.stderr)
        return 1
    except StorageError as exc:
        print(f"roost: {exc}", file=sys.stderr)
        return 1
    print(f"copied {source} to {redact_url(url)}")
    width = max(len(table) for table in copied)
    for table, count in copied.items():
        print(f"  {table:<{width}}  {count:>9}")
    return 0
