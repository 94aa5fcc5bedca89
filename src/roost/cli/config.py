"""``roost config``: look at the configuration a node would run with, without starting one.

``show`` prints every effective value (secrets redacted), with ``--origin`` the layer and
place that set it; ``explain KEY`` shows the winning layer and every value it shadows;
``check FILE`` validates a file; ``docs`` prints the reference generated from the schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from roost.cli.up import FLAGS, add_config_args, load


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config", help="inspect and check the configuration"
    )
    commands = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    show = commands.add_parser("show", help="print the effective configuration")
    _add_flags(show)
    show.add_argument("--origin", action="store_true", help="say where each value came from")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(handler=_show)

    explain = commands.add_parser("explain", help="where a setting's value comes from")
    explain.add_argument("key", help="a setting, e.g. c2s.port")
    _add_flags(explain)
    explain.set_defaults(handler=_explain)

    check = commands.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=argparse.FileType("rb"), help="a TOML file")
    check.set_defaults(handler=_check)

    docs = commands.add_parser("docs", help="print the reference of every setting (markdown)")
    docs.set_defaults(handler=_docs)


def _add_flags(parser: argparse.ArgumentParser) -> None:
    """The same configuration inputs as ``roost up``, to see what it would run with."""
    add_config_args(parser)
    for flag, _key, kwargs in FLAGS:
        parser.add_argument(flag, default=None, **kwargs)
    for flag in ("--registration", "--allow-plaintext"):
        parser.add_argument(flag, action="store_true", default=None, help=argparse.SUPPRESS)


def _show(args: argparse.Namespace) -> int:
    loaded = load(args)
    rows = loaded.show()
    if args.json:
        print(
            json.dumps(
                {
                    key: {"value": value, "layer": origin.layer, "where": origin.where}
                    if args.origin
                    else value
                    for key, value, origin in rows
                },
                indent=2,
            )
        )
        return 0
    width = max(len(key) for key, _, _ in rows)
    for key, value, origin in rows:
        suffix = f"    # {origin.describe()}" if args.origin else ""
        print(f"{key:<{width}} = {value}{suffix}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from roost.config.pipeline import SCHEMA, display

    loaded = load(args)
    try:
        values = loaded.explain(args.key)
    except KeyError as exc:
        print(f"roost: {exc.args[0]}", file=sys.stderr)
        return 2
    setting = SCHEMA[args.key]
    print(
        f"{args.key}: {setting.doc} ({setting.type_name()}; env {setting.env}; "
        f"{'changes at run time' if setting.runtime else 'needs a restart'})"
    )
    for i, value in enumerate(values):
        mark = "wins    " if i == 0 else "shadowed"
        print(f"  {mark} {display(setting, value.value)}  from {value.describe()}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from roost.config.pipeline import check_file

    args.file.close()
    problems = check_file(Path(args.file.name))
    for problem in problems:
        print(f"{problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.file.name}: ok")
    return 0


def _docs(args: argparse.Namespace) -> int:
    from roost.config.docs import reference

    sys.stdout.write(reference())
    return 0
