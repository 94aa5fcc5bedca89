"""``roost ctl``: administer a running node through its control socket.

    roost ctl [--data-dir DIR] [--json] [--node NAME ... | --all] COMMAND [ARGS...]

The commands and their arguments come from the registry of admin commands
(:mod:`roost.admin.commands`): the sub-parsers are built from it, so ``--help`` and usage
errors describe exactly what the node accepts. Output is human-readable by default; with
``--json`` it is the command's JSON result (on failure ``{"error": {"code", "message"}}``).

In a cluster, the node reached through the socket can run the command on others over the
mesh (:mod:`roost.admin.fanout`): ``--node NAME`` (repeatable) on those nodes, ``--all`` on
every node of the cluster; ``config set``, ``config unset``, ``config status`` and ``kick`` do
so by default. The answer is then one per node: a table with a node column for people, and
for ``--json`` one object ``{NODE: {"ok": true, "result": ...} | {"ok": false, "error":
{...}}}``. Nodes that failed or did not answer within ``--node-timeout`` are also reported on
stderr.

From another machine, ``--remote HOST:PORT --credentials DIR`` speaks the same protocol over
mutual TLS to a node's ``admin.listen`` (off by default), with the administrator certificate
that ``roost cluster issue --admin NAME`` wrote to DIR (:mod:`roost.admin.remote`); the shell
and ``bench`` are refused there.

Exit codes, for scripts:

    0  the command succeeded (on every node asked)
    1  the node ran the command and it failed (no such user, invalid configuration ...);
       with several nodes: it failed on at least one
    2  bad arguments (usage errors, unknown settings, invalid values, unknown node names,
       --node/--all for a command that runs on one node only)
    3  the node is not reachable (not running, stale socket, not allowed)
    4  with several nodes: at least one did not answer (down, unlinked, or too slow); the
       others' results are printed

With several nodes the exit code is the highest of theirs (4 over 1). ``kick`` across nodes
succeeds when some node found sessions to end: the others' ``not-found`` is no failure.

``roost ctl completion bash|zsh`` prints a completion script::

    source <(roost ctl completion bash)     # ~/.bashrc
    source <(roost ctl completion zsh)      # ~/.zshrc
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from roost.admin.protocol import EXIT_UNREACHABLE, EXIT_USAGE

_COMMON_OPTIONS = (
    "--data-dir",
    "--config",
    "--socket",
    "--timeout",
    "--remote",
    "--credentials",
    "--node",
    "--all",
    "--node-timeout",
    "--json",
)


def register(subparsers: Any) -> None:
    from roost.admin.commands import GROUPS, registry

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ctl",
        help="administer a running node",
        description="Run an admin command on the node running on a data directory.",
        epilog="exit codes: 0 ok, 1 the command failed, 2 bad arguments, "
        "3 the node is not reachable, 4 a node of several did not answer",
    )
    add_connection_args(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    commands = parser.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)
    groups: dict[str, Any] = {}
    for spec in registry().values():
        words = spec.name.split()
        target = commands
        if len(words) > 1:
            if words[0] not in groups:
                about = GROUPS.get(words[0], f"{words[0]} commands")
                group = commands.add_parser(words[0], help=about, description=about)
                groups[words[0]] = group.add_subparsers(
                    dest=f"ctl_{words[0]}", metavar="ACTION", required=True
                )
            target = groups[words[0]]
        leaf = target.add_parser(words[-1], help=spec.help, description=spec.help)
        for arg in spec.args:
            _add_argument(leaf, arg)
        add_connection_args(leaf, suppress=True)
        leaf.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )
        leaf.set_defaults(handler=_run, ctl=spec.name)
    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(handler=_completion)


def add_connection_args(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """How to find the node; accepted before and after the command (``suppress``)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default(None),
        metavar="DIR",
        help="the node's data directory (default: ./roost-data)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=default(None),
        metavar="FILE",
        help="the node's configuration file, if admin.socket is set there",
    )
    parser.add_argument(
        "--socket",
        type=Path,
        default=default(None),
        metavar="PATH",
        help="the control socket (default: admin.socket, ctl.sock in the data directory)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(60.0),
        metavar="SECONDS",
        help="how long to wait for the node (default: 60)",
    )
    parser.add_argument(
        "--remote",
        default=default(None),
        metavar="HOST:PORT",
        help="a node's admin.listen address, over mutual TLS (with --credentials)",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        default=default(None),
        metavar="DIR",
        help="for --remote: the directory of `roost cluster issue --admin NAME` "
        "(ca.pem, admin.pem, admin-key.pem)",
    )
    parser.add_argument(
        "--node",
        action="append",
        default=default(None),
        metavar="NAME",
        help="run the command on this node of the cluster (repeatable)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        default=default(False),
        help="run the command on every node of the cluster",
    )
    parser.add_argument(
        "--node-timeout",
        type=float,
        default=default(None),
        metavar="SECONDS",
        help="how long each other node has to answer (default: admin.node_timeout)",
    )


def _add_argument(parser: argparse.ArgumentParser, arg: Any) -> None:
    kwargs: dict[str, Any] = {"help": arg.help, "dest": f"arg_{arg.name}"}
    if arg.type is bool:
        parser.add_argument(arg.option, action="store_true", default=None, **kwargs)
        return
    kwargs["type"] = arg.type
    if arg.choices:
        kwargs["choices"] = arg.choices
    if arg.flag:
        required = arg.required and not arg.secret  # a secret left out is asked for
        parser.add_argument(arg.option, required=required, metavar=arg.name.upper(), **kwargs)
    else:
        if not arg.required:
            kwargs["nargs"] = "?"
        parser.add_argument(metavar=arg.name.upper(), **kwargs)


def _secret(name: str) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise SystemExit(f"roost: no {name} given")
        return line
    first = getpass.getpass(f"{name.capitalize()}: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit(f"roost: the {name}s differ")
    if not first:
        raise SystemExit(f"roost: empty {name}")
    return first


def _fail(args: argparse.Namespace, code: str, message: str, exit_code: int) -> int:
    print(f"roost: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"error": {"code": code, "message": message}}, indent=2))
    return exit_code


def _run(args: argparse.Namespace) -> int:
    from roost.admin import render
    from roost.admin.client import NodeUnreachable, RemoteError, result_of
    from roost.admin.commands import registry

    spec = registry()[args.ctl]
    fields: dict[str, Any] = {}
    if args.all and args.node:
        return _fail(args, "bad-target", "give --node or --all, not both", EXIT_USAGE)
    if args.all or args.node:
        if not spec.fanout:
            message = f"'{spec.name}' runs on one node only: --node and --all do not apply"
            return _fail(args, "bad-target", message, EXIT_USAGE)
        fields["nodes"] = "all" if args.all else args.node
    if args.node_timeout is not None:
        if args.node_timeout <= 0:
            return _fail(args, "bad-arguments", "--node-timeout must be positive", EXIT_USAGE)
        fields["node_timeout"] = args.node_timeout
    raw: dict[str, Any] = {}
    for arg in spec.args:
        value = getattr(args, f"arg_{arg.name}", None)
        if value is None and arg.secret and arg.required:
            try:
                value = _secret(arg.name)
            except SystemExit as exc:
                print(exc.code, file=sys.stderr)
                return EXIT_USAGE
        if value is not None:
            raw[arg.name] = value
    try:
        with _connect(args) as client:
            answer = client.wait(client.send(spec.name, raw, **fields))
            result = result_of(answer)
            if spec.name == "stop" and _stopped_here(answer):
                client.wait_closed()  # the node closes the channel last, once it stopped
    except _Usage as exc:
        return _fail(args, "bad-arguments", str(exc), EXIT_USAGE)
    except NodeUnreachable as exc:
        return _fail(args, "unreachable", str(exc), EXIT_UNREACHABLE)
    except RemoteError as exc:
        return _fail(args, exc.code, exc.message, exc.exit_code)
    if "nodes" in answer:
        return _print_nodes(args, spec, answer["nodes"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print((spec.render or render.generic)(result))
    return 0


def _connect(args: argparse.Namespace) -> Any:
    """A control connection: the local socket, or ``--remote`` over TLS. Raises
    NodeUnreachable (exit 3), or SystemExit for unusable options."""
    from roost.admin.client import ControlClient, locate

    if args.remote is None:
        if args.credentials is not None:
            raise _Usage("--credentials goes with --remote")
        return ControlClient.connect(
            locate(args.data_dir, args.config, args.socket), timeout=args.timeout
        )
    from roost.admin.remote import AdminFiles, connect
    from roost.cluster.mesh_types import parse_address

    if args.credentials is None:
        raise _Usage("--remote needs --credentials DIR (from `roost cluster issue --admin NAME`)")
    files = AdminFiles.in_directory(args.credentials)
    missing = files.missing()
    if missing:
        raise _Usage(f"{missing[0]} is missing (made by `roost cluster issue --admin NAME`)")
    try:
        address = parse_address(args.remote)
    except ValueError as exc:
        raise _Usage(f"--remote: {exc}") from None
    return connect(address, files, args.timeout)


class _Usage(Exception):
    """Options that cannot work together (exit 2)."""


def _stopped_here(answer: dict[str, Any]) -> bool:
    """Whether the node we are connected to stops (``stop`` for it, or for all)."""
    if "nodes" not in answer:
        return True
    reply = answer["nodes"].get(answer.get("node"))
    return reply is not None and bool(reply.get("ok"))


def _print_nodes(args: argparse.Namespace, spec: Any, replies: dict[str, Any]) -> int:
    """The answers of several nodes: one table (or JSON object), failures on stderr."""
    from roost.admin import render
    from roost.admin.protocol import nodes_exit_code

    code = nodes_exit_code(replies, spec.found_anywhere)
    results = {node: reply["result"] for node, reply in replies.items() if reply.get("ok")}
    for node, reply in sorted(replies.items()):
        error = reply.get("error")
        if error is None or (spec.found_anywhere and results and error["code"] == "not-found"):
            continue
        print(f"roost: {node}: {error['message']} ({error['code']})", file=sys.stderr)
    if args.json:
        print(json.dumps(replies, indent=2))
    elif results:
        if spec.render_nodes is not None:
            print(spec.render_nodes(results))
        else:
            print(render.sections(results, spec.render or render.generic))
    return code


def _completion(args: argparse.Namespace) -> int:
    from roost.cli import build_parser

    top = sorted(_subcommands(build_parser()))
    script = bash_completion(top)
    if args.shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    sys.stdout.write(script)
    return 0


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def bash_completion(top: list[str]) -> str:
    """A bash completion function for ``roost``, ``roost ctl`` in detail, from the registry."""
    from roost.admin.commands import registry

    commands = registry()
    first_words = sorted({name.split()[0] for name in commands} | {"completion"})
    groups = sorted({name.split()[0] for name in commands if " " in name})
    valued = sorted(
        {a.option for spec in commands.values() for a in spec.args if a.flag and a.type is not bool}
    )
    takes_value = "|".join(
        [
            "--data-dir",
            "--config",
            "--socket",
            "--timeout",
            "--remote",
            "--credentials",
            "--node",
            "--node-timeout",
            *valued,
        ]
    )
    cases = [f'        "") words="{" ".join(first_words)}" ;;']
    for group in groups:
        actions = sorted(name.split()[1] for name in commands if name.startswith(group + " "))
        cases.append(f'        "{group}") words="{" ".join(actions)}" ;;')
    for name, spec in sorted(commands.items()):
        flags = " ".join(arg.option for arg in spec.args if arg.flag)
        positional = [arg for arg in spec.args if not arg.flag]
        hints = " ".join(positional[0].hints) if positional else ""
        cases.append(
            f'        "{name}") words="{flags} $common"; '
            f'[[ $positionals -eq 0 ]] && words="$words {hints}" ;;'
        )
    cases.append('        "completion") words="bash zsh" ;;')
    body = "\n".join(cases)
    return f"""# roost shell completion (generated by `roost ctl completion`)
_roost() {{
    local cur prev common words cmd word positionals i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "{" ".join(top)}" -- "$cur"))
        return
    fi
    if [[ ${{COMP_WORDS[1]}} != ctl ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi
    case "$prev" in
        --data-dir|--config|--socket|--credentials) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        {takes_value}) COMPREPLY=(); return ;;
    esac
    common="{" ".join(_COMMON_OPTIONS)}"
    cmd=""
    positionals=0
    for ((i = 2; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case "$word" in
            {takes_value}) ((i++)) ;;
            -*) ;;
            *)
                case "$cmd" in
                    ""|{"|".join(groups)}) cmd="${{cmd:+$cmd }}$word" ;;
                    *) ((positionals++)) ;;
                esac ;;
        esac
    done
    case "$cmd" in
{body}
        *) words="$common" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _roost roost
"""
