"""``roost up``: run a node until SIGINT or SIGTERM.

Prints one ready line on stdout once clients can connect, naming the ports, for people and
for scripts that wait for it. On a signal every stream is closed with ``<system-shutdown/>``
and storage is flushed before the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from roost.cli.common import add_data_dir

READY = "roost ready"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "up",
        help="run the server",
        description="Run a roost node in the foreground until interrupted.",
    )
    add_data_dir(parser)
    parser.add_argument("--domain", default="localhost", help="the XMPP domain served")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--c2s-port", type=_port, default=5222, metavar="PORT", help="STARTTLS port (5222)"
    )
    parser.add_argument(
        "--c2s-tls-port",
        type=_port,
        default=5223,
        metavar="PORT",
        help="direct TLS port (5223; -1 disables)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging verbosity (info)",
    )
    parser.add_argument(
        "--registration",
        action="store_true",
        help="let anyone create an account in-band (XEP-0077)",
    )
    parser.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="let clients authenticate without TLS (for benchmarks and trusted networks only)",
    )
    parser.set_defaults(handler=run)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not -1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def run(args: argparse.Namespace) -> int:
    from roost.config import ServerConfig

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = ServerConfig(
        data_dir=Path(args.data_dir),
        domain=args.domain,
        host=args.host,
        c2s_port=args.c2s_port,
        c2s_tls_port=args.c2s_tls_port,
        log_level=args.log_level,
        registration=args.registration,
        require_tls=not args.allow_plaintext,
        allow_plain_without_tls=args.allow_plaintext,
    )
    try:
        run_loop(serve(config))
    except OSError as exc:
        print(f"roost: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (it is a dependency on POSIX)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main)
        return
    uvloop.run(main)


async def serve(config: Any) -> None:
    from roost.core.server import Server

    started = time.perf_counter()
    server = Server(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ports = server.ports
    parts = [f"c2s {config.host}:{ports['c2s']} (STARTTLS)"]
    if "c2s_tls" in ports:
        parts.append(f"c2s_tls {config.host}:{ports['c2s_tls']} (direct TLS)")
    print(
        f"{READY}: {config.domain} on {', '.join(parts)}; data in {config.data_dir} "
        f"({(time.perf_counter() - started) * 1000:.0f} ms)",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        logging.getLogger("roost").info("shutting down")
        await server.stop()
