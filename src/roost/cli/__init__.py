"""The ``roost`` command: one argparse parser, each subcommand registered by its own module.

Subcommand modules expose ``register(subparsers)``, which adds a parser and sets
``handler`` (a function of the parsed namespace returning the exit code). Heavy imports happen
inside handlers, so that ``roost up`` starts fast and ``roost --help`` is instant.

Exit codes: 0 success, 1 the command failed, 2 bad arguments (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from roost import __version__


def build_parser() -> argparse.ArgumentParser:
    from roost.bench import cli as bench_cli
    from roost.cli import cluster, config, ctl, shell, storage, up, user

    parser = argparse.ArgumentParser(
        prog="roost",
        description="roost: an XMPP instant-messaging server.",
    )
    parser.add_argument("--version", action="version", version=f"roost {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up.register(subparsers)
    user.register(subparsers)
    config.register(subparsers)
    bench_cli.register(subparsers)
    cluster.register(subparsers)
    ctl.register(subparsers)
    shell.register(subparsers)
    storage.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`roost config show | head`): not an error of ours.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
