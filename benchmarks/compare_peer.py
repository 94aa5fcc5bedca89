"""Plumbing for ``benchmarks.compare``: installing a server, starting and stopping it, its CPU.

Every server runs as the current user, in the foreground, in a process group of its own
(``start_new_session``), from a configuration this package writes into a fresh directory
(``benchmarks/.work/run/<server>/``) with its data, spool and logs beside it: never the system
services or anything under /etc. It listens for clients on a free loopback port only, is
pinned to core 0 with ``taskset`` and is stopped with SIGTERM, then its whole process group is
killed (pool workers and the like), so that nothing outlives a run or holds its port.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import ROOT

WORK = ROOT / "benchmarks" / ".work"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


class ServerError(RuntimeError):
    """A server could not be installed or started; the message says why."""


def say(text: str) -> None:
    """Progress for the person running the comparison (stderr; stdout is the report)."""
    print(f"[compare] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for children in glob.glob(f"/proc/{current}/task/*/children"):
            try:
                kids = [int(k) for k in Path(children).read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


@dataclass
class Running:
    """A started server. ``pid`` is the process whose RSS is reported (the BEAM, the Lua
    interpreter, the Python process); CPU time is summed over it and its descendants."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    stop_timeout: float = STOP_TIMEOUT

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        total = 0
        for pid in [self.pid, *_descendants(self.pid)]:
            try:
                total += _ticks(pid)
            except (OSError, IndexError, ValueError):
                continue  # gone in between
        return total / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, SIGKILL after ``stop_timeout``; then whatever is left in its group."""
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} ignored SIGTERM for {self.stop_timeout:g} s: killed")
                process.kill()
                process.wait()
        # Started with start_new_session, so the group's id is the server's pid.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + 5
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def launch(
    name: str,
    command: list[str],
    port: int,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stop_timeout: float = STOP_TIMEOUT,
) -> Running:
    """Start ``command`` (already prefixed with taskset) and wait for ``port`` to accept."""
    if port_open(port):
        raise ServerError(f"port {port} is already taken, {name} not started")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerError(f"cannot run {command[0]}: {exc}") from None
    running = Running(name, process, port, log, stop_timeout)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerError(
                    f"{name} exited with status {process.returncode} while starting "
                    f"(log: {log}):\n{log_tail(log)}"
                )
            if port_open(port):
                return running
            time.sleep(0.2)
        raise ServerError(
            f"{name} did not listen on {port} within {START_TIMEOUT:g} s (log: {log}):\n"
            f"{log_tail(log)}"
        )
    except BaseException:  # Ctrl-C included: never leave a half-started server behind
        running.stop()
        raise


def run(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    """Run ``command`` to completion; its stdout, or ServerError with its output."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"`{shlex.join(command)}`: {exc}") from None
    if done.returncode != 0:
        raise ServerError(
            f"`{shlex.join(command)}` failed ({done.returncode}): "
            f"{(done.stderr or done.stdout).decode(errors='replace')[-1500:]}"
        )
    return done.stdout.decode(errors="replace")


def dpkg_version(package: str) -> str | None:
    """The installed version of a Debian package, or None."""
    if shutil.which("dpkg-query") is None:
        return None
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status} ${Version}", package],
        capture_output=True,
        check=False,
    )
    text = done.stdout.decode()
    if done.returncode != 0 or "install ok installed" not in text:
        return None
    return text.rsplit(" ", 1)[1]


def _stop_service(package: str, prefix: list[str]) -> None:
    """Debian starts a freshly installed daemon as a system service (on the standard ports,
    with /etc's configuration). The comparison runs its own instances; a system one would
    only take CPU and ports, so it is stopped (not disabled, nor uninstalled)."""
    for command in (["service", package, "stop"], ["invoke-rc.d", package, "stop"]):
        if shutil.which(command[0]):
            say(f"stopping the {package} system service the package started: {shlex.join(command)}")
            subprocess.run([*prefix, *command], capture_output=True, check=False, timeout=120)
            return


def apt_install(package: str) -> None:
    """``apt-get install -y PACKAGE`` if it is missing (as root, or through ``sudo -n``)."""
    if dpkg_version(package) is not None:
        return
    if shutil.which("apt-get") is None:
        raise ServerError(f"{package} is not installed and there is no apt-get to install it")
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise ServerError(f"{package} is not installed; run: sudo apt-get install {package}")
        prefix = ["sudo", "-n"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", package]
    say(f"{package} is not installed: {shlex.join(install)}")
    started = time.monotonic()
    try:
        run(install, env=env)
    except ServerError:
        update = [*prefix, "apt-get", "update", "-q"]
        say(f"that failed; refreshing the package lists first: {shlex.join(update)}")
        run(update, env=env)
        run(install, env=env)
    version = dpkg_version(package)
    if version is None:
        raise ServerError(f"apt-get install {package} succeeded but dpkg does not list it")
    say(f"installed {package} {version} in {time.monotonic() - started:.0f} s")
    _stop_service(package, prefix)


def roost_snapshot(work: Path) -> tuple[Path, str]:
    """Export the committed ``src/`` of HEAD into ``work`` and return it with the commit.

    Server and generator both run from it (``PYTHONPATH``), so that edits others make to the
    work tree while the comparison runs cannot change, or break, what is measured.
    """
    commit = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
    target = work / "roost-src" / commit
    if not (target / "src" / "roost").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD", "src"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src", commit


@dataclass
class Peer:
    """One server under test. Subclasses fill in installation, configuration and start-up.

    ``notes`` go into the report's set-up section: how the server was installed and started,
    and what its configuration turns off. ``commands`` records how it was started.
    """

    name: str
    label: str
    tls: bool = False  # the generator must STARTTLS (the server requires it)
    unsupported: dict[str, str] = field(default_factory=dict)  # scenario -> why not run
    # scenario -> --presence-timeout, for a server that does not send a client's presence
    # back to it (the generator would wait the whole set-up timeout for it)
    presence_wait: dict[str, float] = field(default_factory=dict)
    # Plan fields (users, presence_clients) this server is measured with at most, and why.
    scale: dict[str, int] = field(default_factory=dict)
    scale_why: str = ""
    setup_timeout: float = 600.0  # presence: --setup-timeout (subscribing the rosters)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def install(self) -> None:
        """Install the server if it is missing (raises ServerError)."""

    def version(self) -> str:
        raise NotImplementedError

    def prepare(self, directory: Path) -> None:
        """Set up a fresh ``directory`` (the server's data lives there too)."""

    def start(self, directory: Path) -> Running:
        raise NotImplementedError

    def load_args(self, scenario: str) -> list[str]:
        """What the generator needs besides the common arguments to talk to this server."""
        args = ["--tls"] if self.tls else []
        if scenario in self.presence_wait:
            args += ["--presence-timeout", f"{self.presence_wait[scenario]:g}"]
        return args

    def record(self, command: list[str], env: dict[str, str] | None = None, **hide: str) -> None:
        """Remember how the server was started; ``hide`` maps placeholders to values."""
        swap = {value: name for name, value in hide.items()}
        command = [swap.get(part, part) for part in command]
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        line = f"{shown} {shlex.join(command)}".strip()
        if line not in self.commands:
            self.commands.append(line)
