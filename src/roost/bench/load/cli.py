"""``roost bench load``: the load generator's command line.

:func:`register` adds the ``load`` tool to the ``roost bench`` sub-parsers; :func:`main` runs
it alone (``python -m roost.bench.load ...``). Examples::

    roost bench load --target 127.0.0.1:5222 --domain localhost --register \\
        --scenario idle --clients 10000 --duration 30 --server-pid 1234
    roost bench load --target 127.0.0.1:5222 --scenario chat --clients 1000 --duration 20
    roost bench load --target 127.0.0.1:5222 --scenario chat --clients 1000 --rate 2000 --json
    roost bench load --target xmpp.example:5222 --tls --users-from users.txt --scenario presence

The report goes to stdout (``--json``: one JSON object), a progress line a second to stderr.

Exit codes: 0 the run completed without a problem; 1 something failed (a client could not
connect or log in, a stream broke, a stanza bounced, a delivery was lost); the partial results
are printed all the same. 2 bad arguments (argparse's ``error``, with the usage line).

Importing this module is cheap: the generator itself is imported by the handler.
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

_DEFAULT_CLIENTS = 100
_DEFAULT_PREFIX = "load"
_DEFAULT_PASSWORD = "load-secret"

# API field names as the command line spells them, for error messages.
_OPTIONS = {
    "starttls": "--tls",
    "direct_tls": "--direct-tls",
    "initial_presence": "--no-initial-presence",
    "port": "--target port",
    "users": "--users-from",
}
_FIELDS = (
    "connect_concurrency",
    "login_timeout",
    "setup_timeout",
    "presence_timeout",
    "max_messages",
    "roster_size",
    "server_pid",
    "user_prefix",
    "scenario",
    "clients",
    "duration",
    "window",
    "rate",
    "drain",
    "verify",
    "cafile",
    "mechanism",
    "domain",
)


def _number(kind: type[int] | type[float], least: float, strict: bool) -> Callable[[str], Any]:
    noun = "an integer" if kind is int else "a number"

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not math.isfinite(value) or value < least or (strict and value == least):
            bound = f"greater than {least:g}" if strict else f"at least {least:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value

    return convert


_positive_int = _number(int, 1, strict=False)
_positive = _number(float, 0, strict=True)
_nonnegative = _number(float, 0, strict=False)


def _target(text: str) -> tuple[str, int]:
    from roost.bench.load.config import parse_target

    try:
        return parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "load",
        help="XMPP load generator: logins, chat, presence against any server",
        description=(
            "Drive many XMPP clients from one process against a server and measure login "
            "rate, message throughput and latency, presence fan-out, and server memory."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(handler=lambda args: _run(parser, args))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target")
    target.add_argument(
        "--target", required=True, type=_target, metavar="HOST:PORT", help="the c2s port"
    )
    target.add_argument("--domain", default="localhost", help="the XMPP domain (localhost)")
    target.add_argument("--tls", action="store_true", help="STARTTLS before authenticating")
    target.add_argument(
        "--direct-tls", action="store_true", help="TLS from the first byte (XEP-0368)"
    )
    target.add_argument(
        "--verify", action="store_true", help="verify the server certificate (default: not)"
    )
    target.add_argument(
        "--sm",
        action="store_true",
        help="enable stream management (XEP-0198) and acknowledge what the server sends",
    )
    target.add_argument("--cafile", metavar="FILE", help="trust these CAs (implies --verify)")
    target.add_argument(
        "--mechanism",
        default="auto",
        choices=["auto", "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"],
        help="SASL mechanism (auto: PLAIN if offered, else SCRAM)",
    )
    target.add_argument(
        "--server-pid", type=_positive_int, metavar="PID", help="report this process's RSS"
    )

    load = parser.add_argument_group("load")
    load.add_argument(
        "--scenario",
        default="chat",
        choices=["idle", "chat", "presence"],
        help="what the clients do once logged in (chat)",
    )
    load.add_argument(
        "--clients",
        type=_positive_int,
        metavar="N",
        help=f"clients to log in ({_DEFAULT_CLIENTS}; with --users-from: every user)",
    )
    load.add_argument(
        "--duration", type=_positive, default=10.0, metavar="SECONDS", help="run time (10)"
    )
    load.add_argument(
        "--rate",
        type=_positive,
        metavar="PER_S",
        help="open loop: messages (presence changes) a second; default: closed loop",
    )
    load.add_argument(
        "--window",
        type=_positive_int,
        default=1,
        metavar="N",
        help="closed loop: messages in flight per sender (1)",
    )
    load.add_argument(
        "--max-messages", type=_positive_int, metavar="N", help="stop sending after N"
    )
    load.add_argument(
        "--roster-size",
        type=_positive_int,
        metavar="K",
        help="presence: contacts per client, even (10, fewer for small runs)",
    )
    load.add_argument(
        "--no-initial-presence",
        dest="initial_presence",
        action="store_false",
        help="idle/chat: do not send <presence/> after logging in",
    )
    load.add_argument("--seed", type=int, help="random seed for choosing peers")

    users = parser.add_argument_group("users")
    users.add_argument("--users-from", metavar="FILE", help="'jid password' lines to log in as")
    users.add_argument("--register", action="store_true", help="create the users first (XEP-0077)")
    users.add_argument(
        "--user-prefix", metavar="PREFIX", help=f"user names PREFIX0.. ({_DEFAULT_PREFIX})"
    )
    users.add_argument("--password", help=f"password of the generated users ({_DEFAULT_PASSWORD})")
    users.add_argument("--resource", default="load", help="resource to bind (load)")

    pacing = parser.add_argument_group("timing")
    pacing.add_argument(
        "--connect-concurrency",
        type=_positive_int,
        default=100,
        metavar="N",
        help="logins in progress at once (100)",
    )
    pacing.add_argument(
        "--login-timeout", type=_positive, default=30.0, metavar="SECONDS", help="per client (30)"
    )
    pacing.add_argument(
        "--drain",
        type=_nonnegative,
        default=5.0,
        metavar="SECONDS",
        help="wait this long for in-flight deliveries at the end (5)",
    )
    pacing.add_argument(
        "--setup-timeout",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="limit for the set-up: initial presence, presence subscriptions (60)",
    )
    pacing.add_argument(
        "--presence-timeout",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="the longest of those waits for presence the server sends by itself: each "
        "client's own initial presence back, its contacts' on login (default: the set-up "
        "timeout; lower it for servers that send neither)",
    )

    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a progress line every second on stderr (on)",
    )


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The :class:`LoadConfig` the arguments describe; ``parser.error`` (exit 2) if none."""
    from roost.bench.load.config import LoadConfig, User, read_users

    users: list[User] | None = None
    if args.users_from is not None:
        if args.user_prefix is not None or args.password is not None:
            parser.error("--users-from gives the users: drop --user-prefix and --password")
        try:
            users = read_users(args.users_from, args.domain)
        except (OSError, ValueError) as exc:
            parser.error(f"--users-from: {exc}")
    clients = args.clients
    if clients is None:
        clients = len(users) if users is not None else _DEFAULT_CLIENTS
    host, port = args.target
    config = LoadConfig(
        host=host,
        port=port,
        domain=args.domain,
        scenario=args.scenario,
        clients=clients,
        duration=args.duration,
        rate=args.rate,
        window=args.window,
        max_messages=args.max_messages,
        starttls=args.tls,
        direct_tls=args.direct_tls,
        verify=args.verify or args.cafile is not None,
        cafile=args.cafile,
        users=users,
        register=args.register,
        user_prefix=args.user_prefix or _DEFAULT_PREFIX,
        password=args.password or _DEFAULT_PASSWORD,
        resource=args.resource,
        mechanism=args.mechanism,
        stream_management=args.sm,
        server_pid=args.server_pid,
        connect_concurrency=args.connect_concurrency,
        login_timeout=args.login_timeout,
        drain=args.drain,
        roster_size=args.roster_size,
        initial_presence=args.initial_presence,
        setup_timeout=args.setup_timeout,
        presence_timeout=args.presence_timeout,
        seed=args.seed,
        progress=_stderr if args.progress else None,
    )
    try:
        config.check()
    except ValueError as exc:
        parser.error(_as_options(str(exc)))
    return config


def _as_options(message: str) -> str:
    for name, option in _OPTIONS.items():
        message = re.sub(rf"(?<![\w-]){name}\b", option, message)
    for name in _FIELDS:
        message = re.sub(rf"(?<![\w-]){name}\b", "--" + name.replace("_", "-"), message)
    return message


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    config = config_from_args(parser, args)

    from roost.bench.load import report
    from roost.bench.load.result import LoadResult
    from roost.bench.load.runner import LoadRun

    try:
        run = LoadRun(config)
    except ValueError as exc:
        parser.error(_as_options(str(exc)))
    result: LoadResult = _run_loop(run)
    if args.json:
        print(report.to_json(result))
        for warning in result.warnings:
            _stderr(f"roost bench load: warning: {warning}")
        if not result.ok:
            _stderr(f"roost bench load: failed in phase {result.failed_phase}:")
            for problem in result.problems:
                _stderr(f"  - {problem}")
    else:
        print(report.to_text(result))
    return result.exit_code


def _run_loop(run: Any) -> Any:
    """Run on uvloop when it is installed; the first Ctrl-C stops the run with results."""

    async def main() -> Any:
        import asyncio

        loop = asyncio.get_running_loop()

        def interrupted() -> None:
            _stderr("roost bench load: interrupted; finishing (Ctrl-C again to abort)")
            loop.remove_signal_handler(signal.SIGINT)
            run.stop()

        try:
            loop.add_signal_handler(signal.SIGINT, interrupted)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
            # Not the main thread, or no signals here: Ctrl-C then ends the process.
            pass
        return await run.run()

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        import asyncio

        return asyncio.run(main())
    return uvloop.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m roost.bench.load ARGS``: the tool without the rest of ``roost``."""
    parser = argparse.ArgumentParser(
        prog="python -m roost.bench.load", description="roost's XMPP load generator."
    )
    add_arguments(parser)
    return _run(parser, parser.parse_args(argv))
