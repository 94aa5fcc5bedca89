"""``roost up``: run a node until SIGINT or SIGTERM (or ``roost ctl stop``).

Prints one ready line on stdout once clients can connect, naming the ports, for people and
for scripts that wait for it. On a signal every stream is closed with ``<system-shutdown/>``
and storage is flushed before the process exits. SIGHUP reloads the configuration
(:mod:`roost.admin.reload`): runtime settings and the TLS certificate take effect, the
others are logged as needing a restart, and an invalid configuration changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roost.cli.common import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    from roost.admin.reload import ConfigSource
    from roost.config.pipeline import LoadedConfig

READY = "roost ready"


# Flags of `roost up`: (flag, setting key, argparse keywords). Only the flags a user gives
# take part in the configuration (as the "flag" layer); argparse defaults stay out of it.
FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--domain", "server.domain", {"help": "the XMPP domain served (localhost)"}),
    ("--host", "c2s.host", {"help": "address to listen on (127.0.0.1)"}),
    ("--c2s-port", "c2s.port", {"type": int, "metavar": "PORT", "help": "STARTTLS port (5222)"}),
    (
        "--c2s-tls-port",
        "c2s.tls_port",
        {"type": int, "metavar": "PORT", "help": "direct TLS port (5223; -1 disables)"},
    ),
    (
        "--websocket-port",
        "websocket.port",
        {"type": int, "metavar": "PORT", "help": "XMPP over WebSocket port (5280; -1 disables)"},
    ),
    (
        "--log-level",
        "server.log_level",
        {"choices": ["debug", "info", "warning", "error"], "help": "logging verbosity (info)"},
    ),
]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "up",
        help="run the server",
        description="Run a roost node in the foreground until interrupted. Settings come from "
        "defaults < the config file < ROOST_* environment variables < these flags < runtime "
        "overrides; see `roost config show --origin`.",
    )
    add_config_args(parser)
    for flag, _key, kwargs in FLAGS:
        parser.add_argument(flag, default=None, **kwargs)
    parser.add_argument(
        "--registration",
        action="store_true",
        default=None,
        help="let anyone create an account in-band (XEP-0077)",
    )
    parser.add_argument(
        "--allow-plaintext",
        action="store_true",
        default=None,
        help="let clients authenticate without TLS (for benchmarks and trusted networks only)",
    )
    parser.add_argument(
        "--nodes",
        default=None,
        metavar="N",
        help="run N nodes of one cluster on this machine, sharing the client ports "
        "('auto': one per core)",
    )
    parser.add_argument("--node", default=None, metavar="NAME", help="this node's cluster name")
    parser.add_argument(
        "--join",
        action="append",
        default=None,
        metavar="HOST:PORT",
        help="join the cluster of the node at HOST:PORT (repeatable)",
    )
    parser.add_argument(
        "--cluster-listen",
        default=None,
        metavar="HOST:PORT",
        help="address for other nodes (127.0.0.1:7400)",
    )
    parser.set_defaults(handler=run)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"where roost keeps its data (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="configuration file (default: roost.toml in the data directory, if present)",
    )


def flags_of(args: argparse.Namespace) -> dict[str, tuple[Any, str]]:
    """The settings given on the command line, for the configuration's flag layer."""
    flags: dict[str, tuple[Any, str]] = {}
    if getattr(args, "data_dir", None) is not None:
        flags["server.data_dir"] = (str(args.data_dir), "--data-dir")
    for flag, key, _ in FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            flags[key] = (str(value), flag)
    if getattr(args, "node", None):
        flags["cluster.node"] = (args.node, "--node")
    if getattr(args, "join", None):
        flags["cluster.join"] = (",".join(args.join), "--join")
    if getattr(args, "cluster_listen", None):
        flags["cluster.listen"] = (args.cluster_listen, "--cluster-listen")
    if getattr(args, "registration", None):
        flags["auth.registration"] = ("true", "--registration")
    if getattr(args, "allow_plaintext", None):
        flags["c2s.require_tls"] = ("false", "--allow-plaintext")
        flags["c2s.allow_plain_without_tls"] = ("true", "--allow-plaintext")
    return flags


def load(args: argparse.Namespace) -> Any:
    """Build the configuration for a command; exit 2 with the problems when it is invalid."""
    from roost.config.pipeline import ConfigError, build

    try:
        return build(config_file=args.config, flags=flags_of(args))
    except ConfigError as exc:
        print(f"roost: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run(args: argparse.Namespace) -> int:
    from roost.admin.reload import ConfigSource
    from roost.storage import StorageError

    loaded = load(args)
    config = loaded.config
    if getattr(args, "nodes", None) is not None:
        return supervise(args, config)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # A reload (SIGHUP, `roost ctl config reload`) builds from these same inputs again.
    source = ConfigSource.capture(args.config, flags_of(args))
    try:
        run_loop(serve(config, loaded=loaded, source=source))
    except (OSError, StorageError) as exc:
        print(f"roost: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


# The garbage collector's thresholds for a node process (CPython's are 700, 10, 10). With
# thousands of sessions, a young collection every 700 container allocations promotes objects
# that are merely in flight (a stanza being routed, an archive record waiting for its batch) to
# the older generations, whose collections then walk every session's objects: at 2,000
# messages/s they showed up as stalls of 2-60 ms (timed with gc.callbacks) and, with the
# archive's writes, put the 99th percentile of latency at 4 ms. A young generation of 50,000
# lets in-flight objects die young: measured, no older collection ran during a 20 s run, and
# with the storage thread's lower priority p99 fell to 0.7-1.3 ms (docs/benchmarks.md), with
# no change in throughput. Cycles are still collected, a little later, costing a little memory.
GC_THRESHOLDS = (50_000, 20, 100)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (it is a dependency on POSIX).

    A node process owns its interpreter, so it also sets the collector's thresholds
    (:data:`GC_THRESHOLDS`); in-process servers (the pytest plugin) leave their host's alone.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main)
        return
    uvloop.run(main)


async def serve(
    config: Any, *, loaded: LoadedConfig | None = None, source: ConfigSource | None = None
) -> None:
    """Run a node until SIGINT/SIGTERM or `roost ctl stop`; SIGHUP reloads the configuration."""
    from roost.core.server import Server

    started = time.perf_counter()
    server = Server(config, loaded=loaded, source=source)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: server.spawn(_reload(server)))
    ports = server.ports
    parts = [f"c2s {config.host}:{ports['c2s']} (STARTTLS)"]
    if "c2s_tls" in ports:
        parts.append(f"c2s_tls {config.host}:{ports['c2s_tls']} (direct TLS)")
    if "websocket" in ports:
        parts.append(websocket_part(config, ports["websocket"]))
    node = ""
    if server.cluster is not None:
        host, port = server.cluster.address
        node = f"; cluster node {server.cluster.name} at {host}:{port}"
    print(
        f"{READY}: {config.domain} on {', '.join(parts)}; data in {config.data_dir}{node} "
        f"({(time.perf_counter() - started) * 1000:.0f} ms)",
        flush=True,
    )
    signalled = loop.create_task(stop.wait())
    stopped = loop.create_task(server.wait_stopped())
    try:
        await asyncio.wait({signalled, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        stopped.cancel()
        logging.getLogger("roost").info("shutting down")
        await server.stop()


def supervise(args: argparse.Namespace, config: Any) -> int:
    """``--nodes N``: run N nodes as child processes (roost.cluster.supervisor)."""
    import os

    from roost.cluster.mesh_types import parse_address
    from roost.cluster.supervisor import Supervisor

    text = args.nodes
    if text == "auto":
        nodes = os.cpu_count() or 1
    else:
        try:
            nodes = int(text)
        except ValueError:
            print(
                f"roost up: error: --nodes takes a number or 'auto', not {text!r}", file=sys.stderr
            )
            return 2
        if nodes < 1:
            print("roost up: error: --nodes must be at least 1", file=sys.stderr)
            return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The children get the same inputs (they inherit the environment and read the same
    # files); ports and cluster settings come to them through the environment.
    argv = ["--data-dir", str(config.data_dir)]
    if args.config is not None:
        argv += ["--config", str(args.config)]
    for flag, _key, _ in FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None and flag not in ("--c2s-port", "--c2s-tls-port", "--websocket-port"):
            argv += [flag, str(value)]
    for flag in ("registration", "allow_plaintext"):
        if getattr(args, flag, None):
            argv.append("--" + flag.replace("_", "-"))
    if config.tls_cert is None:
        from roost.c2s.tls import ensure_self_signed

        # One self-signed certificate for every node, made before they race to make their own:
        # the nodes share the client ports, so a client must see the same one from each.
        ensure_self_signed(config.data_dir / "tls", config.domain)
    host, port = parse_address(config.cluster_listen.replace(":0", ":1"))
    cluster_port = 0 if config.cluster_listen.endswith(":0") else port
    supervisor = Supervisor(
        argv,
        nodes=nodes,
        data_dir=config.data_dir,
        host=config.host,
        c2s_port=config.c2s_port,
        c2s_tls_port=config.c2s_tls_port,
        websocket_port=config.websocket_port,
        websocket_part=lambda port: websocket_part(config, port),
        cluster_host=host,
        cluster_port=cluster_port,
    )
    code = 0

    async def main() -> None:
        nonlocal code
        code = await supervisor.run()

    run_loop(main())
    return code


def websocket_part(config: Any, port: int) -> str:
    """How the ready line names the WebSocket listener: its URL, for a browser client."""
    scheme = "wss" if config.websocket_tls else "ws"
    host = config.websocket_host or config.host
    return f"websocket {scheme}://{host}:{port}/xmpp-websocket"


async def _reload(server: Any) -> None:
    from roost.admin.commands import CommandError
    from roost.admin.reload import reload

    log = logging.getLogger("roost")
    log.info("SIGHUP: reloading the configuration")
    try:
        await reload(server)  # logs what it applied and what needs a restart
    except CommandError as exc:
        log.error("reload refused: %s", exc.message)
