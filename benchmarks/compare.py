"""roost against other XMPP servers: the same load, on the same core, with the same generator.

    .venv/bin/python -m benchmarks.compare [--servers roost,ejabberd,prosody,pyjabber]
                                           [--runs 3] [--users 10000] [--quick]
    make bench-compare ARGS='--quick'

ejabberd and Prosody are installed from Debian (``apt-get install -y``, as root or through
``sudo -n``) and PyJabber from PyPI into its own venv when missing; nothing else is assumed.

What is measured, for each server in turn (each measurement on a freshly started server, the
median of ``--runs`` runs):

* **idle**: ``--users`` clients log in, send initial presence and stay for 15 s; the growth of
  the server's resident memory from before the logins to the end, per session (and the login
  rate, which mostly shows the cost of each server's password hashing);
* **chat, closed loop**: 1,000 online users, one message in flight per sender, 20 s:
  messages delivered per second, and server CPU-seconds per 1,000 delivered messages;
* **chat, open loop**: 1,000 users sending 2,000 messages a second in all for 20 s: latency
  percentiles from send to delivery (and the rate achieved, if the server could not keep up);
* **presence**: 1,000 users, each with 10 mutual contacts, changing presence in a closed loop
  for 20 s: notifications delivered per second and server CPU-seconds per 1,000.

Why the comparison is fair:

* one load generator for every server (``roost bench load``: standard RFC 6120/6121 client
  behaviour, in-band registration of the same users, PLAIN login, full-JID 1:1 messages);
* the server under test is pinned to core 0 and the generator to core 1 (``taskset``); a
  server that could use more threads is held to one core too (ejabberd's BEAM runs one
  scheduler, ``+S 1:1``), because roost is a single-threaded process;
* CPU per message is measured in the steady state only: the server's CPU time (its process
  and children, from /proc) between the generator's first and last progress line of the
  measured phase, divided by the deliveries in between, so that logins, which cost very
  different amounts of password hashing, are left out;
* every server gets one virtual host, plaintext c2s where it can do without TLS, registration
  open with throttles, rate limits and shapers off, rosters, presence and offline storage on
  with its default storage, and none of the extras that add per-message work (MAM, carbons,
  stream management, CSI, blocking, PEP; roost's own turned off too):
  ``benchmarks/compare_servers.py`` writes each configuration and the report lists exactly
  what was turned off;
* PyJabber requires STARTTLS, so it is compared with roost over STARTTLS too, and where the
  generator and a server could not talk as they are, the report says what was changed.

The other engineers' tests share this machine: absolute figures are noisy, ratios less so.
Servers are stopped (their whole process group) after each measurement, on errors and on
Ctrl-C/SIGTERM, which still writes the report of what was measured so far. The servers'
configurations, data and logs stay in ``benchmarks/.work/run/<server>/``, the report in
``benchmarks/.work/compare-report.md`` and the raw results in ``compare-results.json``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.compare_peer import WORK, Peer, Running, ServerError, roost_snapshot, say
from benchmarks.compare_report import Column, Plan, report
from benchmarks.compare_servers import PEERS, Roost
from benchmarks.harness import LOAD_CORE, ROOT, taskset

PROGRESS = re.compile(r"^\[\s*(\w+)\]\s+(.*)$")
COUNTS = {"chat": re.compile(r"delivered (\d+)"), "presence": re.compile(r"notifications (\d+)")}
QUICK = Plan(
    users=200,
    runs=1,
    idle_s=3,
    clients=100,
    chat_s=5,
    rate=200,
    presence_clients=100,
    roster=10,
    presence_s=5,
)


@dataclass
class Outcome:
    """One run of the generator: its JSON, and the server's steady-state CPU time."""

    result: dict[str, Any]
    steady_cpu: float | None  # CPU-seconds between the first and last progress line of "run"
    steady_count: int | None  # deliveries in the same window
    total_cpu: float


class RunFailed(RuntimeError):
    pass


def load_command(running: Running, peer: Peer, scenario: str, args: list[str]) -> list[str]:
    return [
        *taskset(LOAD_CORE),
        sys.executable,
        "-m",
        "roost.bench.load",
        "--target",
        f"127.0.0.1:{running.port}",
        "--domain",
        "localhost",
        "--server-pid",
        str(running.pid),
        "--json",
        "--progress",
        "--scenario",
        scenario,
        *peer.load_args(scenario),
        *args,
    ]


def run_load(
    running: Running,
    command: list[str],
    scenario: str,
    timeout: float,
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run the generator; sample the server's CPU at each progress line of the run phase."""
    counter = COUNTS.get(scenario)
    samples: list[tuple[float, int]] = []
    tail: list[str] = []
    cpu_start = running.cpu_seconds()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    assert process.stderr is not None
    errors = process.stderr

    def read_progress() -> None:
        for raw in errors:
            line = raw.decode(errors="replace").rstrip()
            match = PROGRESS.match(line)
            if match is None:
                tail.append(line)
                del tail[:-30]
                continue
            if match.group(1) == "run" and counter is not None:
                found = counter.search(match.group(2))
                if found:
                    samples.append((running.cpu_seconds(), int(found.group(1))))

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        out = process.stdout.read()
        process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:  # interrupted: the generator goes with us
            process.kill()
            process.wait()
    reader.join(timeout=5)
    total_cpu = running.cpu_seconds() - cpu_start
    try:
        result: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError:
        why = "timed out" if process.returncode == -signal.SIGKILL else "failed"
        raise RunFailed(
            f"the generator {why} (exit {process.returncode}): {' / '.join(tail[-5:])}"
        ) from None
    steady_cpu = steady_count = None
    if len(samples) >= 2 and samples[-1][1] > samples[0][1]:
        steady_cpu = samples[-1][0] - samples[0][0]
        steady_count = samples[-1][1] - samples[0][1]
    return Outcome(result, steady_cpu, steady_count, total_cpu)


def _problems(result: dict[str, Any]) -> str:
    problems = result.get("problems") or []
    return "; ".join(str(p) for p in problems[:3]) or f"failed in {result.get('failed_phase')}"


def _require_run(result: dict[str, Any]) -> None:
    if not result.get("traffic") and result.get("scenario") != "idle":
        raise RunFailed(_problems(result))
    clients = result.get("clients", {})
    if clients.get("online") != clients.get("requested"):
        raise RunFailed(
            f"{clients.get('online')}/{clients.get('requested')} online: {_problems(result)}"
        )


def _generator_share(result: dict[str, Any]) -> float:
    """The generator's CPU share (of its one core) during the run, in percent."""
    share = result.get("generator", {}).get("cpu_share", {}).get("run")
    return float(share) * 100 if share is not None else float("nan")


def _per_1000(outcome: Outcome, delivered: int) -> float:
    if outcome.steady_cpu is not None and outcome.steady_count:
        return outcome.steady_cpu / outcome.steady_count * 1000
    # Too short a run for two progress lines: the whole run, logins included.
    return outcome.total_cpu / max(1, delivered) * 1000


class Bench:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.load_commands: dict[str, str] = {}

    def plan_for(self, peer: Peer) -> Plan:
        """The plan, with the sizes ``peer.scale`` caps it to."""
        changes = {k: min(v, getattr(self.plan, k)) for k, v in peer.scale.items()}
        return replace(self.plan, **changes)

    def _session(
        self, peer: Peer, directory: Path, scenario: str, args: list[str], label: str
    ) -> Outcome:
        """Start the server, run the generator against it once, stop the server."""
        running = peer.start(directory)
        try:
            command = load_command(running, peer, scenario, args)
            shown = shlex.join(command)
            shown = shown.replace(f"127.0.0.1:{running.port}", "127.0.0.1:PORT")
            shown = shown.replace(f"--server-pid {running.pid}", "--server-pid PID")
            shown = shown.replace(sys.executable, "python")
            if self.load_commands.setdefault(label, shown) != shown:  # this server's own
                self.load_commands.setdefault(f"{label} ({peer.label})", shown)
            env = {"PYTHONPATH": Roost.pythonpath} if Roost.pythonpath else None
            outcome = run_load(running, command, scenario, 3600, env)
            if not running.alive():
                raise RunFailed(f"{peer.name} exited during the run (see {running.log})")
            return outcome
        finally:
            running.stop()

    def register(self, peer: Peer, directory: Path) -> None:
        """Create the users once, before any measurement (the generator logs them in too)."""
        plan = self.plan_for(peer)
        for prefix, count in (
            ("load", max(plan.users, plan.clients)),
            ("pres", plan.presence_clients),
        ):
            if prefix == "pres" and "presence" in peer.unsupported:
                continue
            args = [
                "--clients",
                str(count),
                "--duration",
                "0.1",
                "--register",
                "--no-initial-presence",
                "--user-prefix",
                prefix,
            ]
            outcome = self._session(peer, directory, "idle", args, "registration")
            clients = outcome.result.get("clients", {})
            if clients.get("online") != count:
                raise RunFailed(f"registering {count} users: {_problems(outcome.result)}")

    def idle(self, peer: Peer, directory: Path) -> dict[str, float]:
        plan = self.plan_for(peer)
        args = ["--clients", str(plan.users), "--duration", f"{plan.idle_s:g}"]
        result = self._session(peer, directory, "idle", args, "idle").result
        _require_run(result)
        rss = (result.get("server") or {}).get("rss") or {}
        if rss.get("end_bytes") is None or rss.get("before_bytes") is None:
            raise RunFailed(f"no server RSS: {_problems(result)}")
        online = result["clients"]["online"]
        return {
            "idle_kib": (rss["end_bytes"] - rss["before_bytes"]) / online / 1024,
            "login_per_s": result["clients"]["login_per_s"],
        }

    def chat(self, peer: Peer, directory: Path, *, rate: int | None) -> dict[str, float]:
        plan = self.plan_for(peer)
        args = ["--clients", str(plan.clients), "--duration", f"{plan.chat_s:g}"]
        if rate is not None:
            args += ["--rate", str(rate)]
        label = "chat, open loop" if rate else "chat, closed loop"
        outcome = self._session(peer, directory, "chat", args, label)
        result = outcome.result
        _require_run(result)
        traffic = result["traffic"]
        if not traffic.get("delivered"):
            raise RunFailed(f"nothing delivered: {_problems(result)}")
        values: dict[str, float] = {"lost": traffic.get("lost", 0)}
        if rate is None:
            values["closed_per_s"] = traffic["delivered_per_s"]
            values["closed_cpu"] = _per_1000(outcome, traffic["delivered"])
            values["closed_gen"] = _generator_share(result)
        else:
            latency = result.get("latency") or {}
            if not latency.get("count"):
                raise RunFailed(f"nothing delivered: {_problems(result)}")
            values["open_p50"] = latency["p50_ms"]
            values["open_p99"] = latency["p99_ms"]
            pacer = traffic.get("pacer") or {}
            values["open_rate"] = pacer.get("achieved_rate", float("nan"))
        return values

    def presence(self, peer: Peer, directory: Path) -> dict[str, float]:
        plan = self.plan_for(peer)
        args = [
            "--clients",
            str(plan.presence_clients),
            "--roster-size",
            str(plan.roster),
            "--duration",
            f"{plan.presence_s:g}",
            "--user-prefix",
            "pres",
            "--setup-timeout",
            f"{peer.setup_timeout:g}",
        ]
        outcome = self._session(peer, directory, "presence", args, "presence")
        result = outcome.result
        _require_run(result)
        traffic = result["traffic"]
        if not traffic.get("delivered"):
            raise RunFailed(f"no notification delivered: {_problems(result)}")
        return {
            "presence_per_s": traffic["delivered_per_s"],
            "presence_cpu": _per_1000(outcome, traffic["delivered"]),
            "presence_gen": _generator_share(result),
            "lost": traffic.get("lost", 0),
        }


STEP_ERRORS = (RunFailed, ServerError, OSError, KeyError, TypeError, subprocess.SubprocessError)


def measure(bench: Bench, column: Column) -> None:
    peer = column.peer
    plan = bench.plan
    try:
        peer.install()
        column.version = peer.version()
    except (ServerError, OSError, subprocess.SubprocessError) as exc:
        column.failure = f"not installed: {exc}"
        say(f"{peer.name}: {column.failure}")
        return
    scaled = bench.plan_for(peer)
    if scaled.users != plan.users:
        remark = f"{scaled.users:,} sessions, not {plan.users:,}: {peer.scale_why}"
        column.remarks.update(idle_kib=remark, login_per_s=remark)
    if scaled.presence_clients != plan.presence_clients:
        remark = (
            f"{scaled.presence_clients:,} users, not {plan.presence_clients:,}: {peer.scale_why}"
        )
        for key in ("presence_per_s", "presence_cpu", "presence_gen"):
            column.remarks[key] = remark
    directory = bench.work / "run" / peer.name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    peer.prepare(directory)
    started = time.monotonic()
    try:
        bench.register(peer, directory)
    except STEP_ERRORS as exc:
        column.failure = f"registration failed: {exc}"
        say(f"{peer.name}: {column.failure}")
        return
    say(f"{peer.name}: users registered ({time.monotonic() - started:.0f} s)")
    steps: list[tuple[str, list[str], Callable[[], dict[str, float]]]] = [
        ("idle", ["idle_kib", "login_per_s"], lambda: bench.idle(peer, directory)),
        (
            "chat, closed loop",
            ["closed_per_s", "closed_cpu", "closed_gen"],
            lambda: bench.chat(peer, directory, rate=None),
        ),
        (
            "chat, open loop",
            ["open_p50", "open_p99", "open_rate"],
            lambda: bench.chat(peer, directory, rate=plan.rate),
        ),
        (
            "presence",
            ["presence_per_s", "presence_cpu", "presence_gen"],
            lambda: bench.presence(peer, directory),
        ),
    ]
    for name, keys, step in steps:
        scenario = name.split(",")[0]
        if scenario in peer.unsupported:
            for key in keys:
                column.errors.setdefault(key, []).append(peer.unsupported[scenario])
            continue
        for number in range(1, plan.runs + 1):
            started = time.monotonic()
            try:
                values = step()
            except STEP_ERRORS as exc:
                message = str(exc) or type(exc).__name__
                say(f"{peer.name}: {name} run {number}/{plan.runs} FAILED: {message}")
                for key in keys:
                    column.errors.setdefault(key, []).append(message)
                if isinstance(exc, ServerError) or number == 1:
                    break  # a server that won't start, or a first run that failed: move on
                continue
            for key, value in values.items():
                column.values.setdefault(key, []).append(value)
            shown = ", ".join(f"{k} {v:,.3g}" for k, v in values.items())
            say(
                f"{peer.name}: {name} run {number}/{plan.runs} "
                f"({time.monotonic() - started:.0f} s): {shown}"
            )


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str], Plan]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--servers",
        default="roost,ejabberd,prosody,pyjabber",
        help=f"comma-separated, in order; of {', '.join(PEERS)} (roost-tls is added before "
        "pyjabber, which requires TLS)",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (3)")
    parser.add_argument("--users", type=int, default=None, help="idle sessions (10000)")
    parser.add_argument("--quick", action="store_true", help="small numbers, one run: a smoke run")
    parser.add_argument("--work-dir", type=Path, default=WORK)
    parser.add_argument(
        "--roost",
        choices=("head", "worktree"),
        default="head",
        help="run roost and the generator from HEAD's committed src/ (default; immune to "
        "edits made while the comparison runs) or from the work tree as installed",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown or not names:
        parser.error(f"unknown servers {unknown}; choose from {', '.join(PEERS)}")
    if "pyjabber" in names and "roost" in names and "roost-tls" not in names:
        names.insert(names.index("roost") + 1, "roost-tls")  # PyJabber requires TLS
    for option in ("runs", "users"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option} must be at least 1")
    base = QUICK if args.quick else Plan(10_000, 3, 15, 1000, 20, 2000, 1000, 10, 20)
    plan = Plan(
        **{**asdict(base), "users": args.users or base.users, "runs": args.runs or base.runs}
    )
    return args, names, plan


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, names, plan = parse(argv)
    signal.signal(signal.SIGTERM, _interrupted)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = plan.users + 1024
    if soft != resource.RLIM_INFINITY and soft < needed:
        top = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, top), hard))

    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    lock = (work / ".lock").open("w")  # held until exit: one comparison per work directory
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"another comparison is running in {work}; use --work-dir for a second one")
        return 2
    if args.roost == "head":
        source, Roost.commit = roost_snapshot(work)
        Roost.pythonpath = str(source)
    bench = Bench(plan, work)
    columns = [Column(PEERS[name]()) for name in names]
    started = time.monotonic()

    def write() -> str:
        text = report(plan, columns, argv, bench.load_commands, pythonpath=Roost.pythonpath)
        (work / "compare-report.md").write_text(text + "\n")
        servers = {
            c.peer.name: {
                "version": c.version,
                "failure": c.failure,
                "values": c.values,
                "errors": c.errors,
            }
            for c in columns
        }
        results = {"argv": argv, "plan": asdict(plan), "servers": servers}
        (work / "compare-results.json").write_text(json.dumps(results, indent=2) + "\n")
        return text

    interrupted = False
    try:
        for column in columns:
            say(f"--- {column.peer.label}")
            measure(bench, column)
            write()  # the report so far
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: the servers are stopped; the report holds what was measured")
    text = write()
    print(text)
    say(f"done in {(time.monotonic() - started) / 60:.1f} min; report in {work}/compare-report.md")
    if interrupted:
        return 130
    return 1 if any(c.failure for c in columns) else 0


if __name__ == "__main__":
    sys.exit(main())
