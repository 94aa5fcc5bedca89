"""The servers ``benchmarks.compare`` measures: how each is installed, configured and started.

Configuration choices, the same in spirit for every server (each server's ``notes`` list what
exactly was turned off, and the report prints them):

* one virtual host ``localhost``; client-to-server only (no s2s, HTTP, BOSH or websocket
  listeners where the server lets us leave them out);
* plaintext streams with PLAIN allowed (roost, ejabberd, Prosody); in-band registration open to
  loopback with every throttle, rate limit and traffic shaper off;
* roster, presence and offline storage on, with each server's default storage; none of the
  extras that add per-message work (MAM, carbons, stream management, CSI, blocking, PEP),
  roost's included: roost has MAM, carbons, blocking and CSI on by default, and they are
  turned off here so that every server does the same work per message.

The configuration writers (``roost_config``, ``ejabberd_config``, ``prosody_config``) are pure
functions, tested in tests/bench/test_compare.py.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.compare_peer import (
    Peer,
    Running,
    ServerError,
    apt_install,
    dpkg_version,
    free_port,
    launch,
    run,
)
from benchmarks.compare_pyjabber import PyJabber
from benchmarks.harness import ROOT, SERVER_CORE, roost_command, taskset

VHOST = "localhost"

# -- roost --------------------------------------------------------------------------------

ROOST_MODULES = ("roster", "presence", "offline", "disco", "register")
ROOST_OFF = ("mam", "carbons", "blocking", "csi", "ping", "version", "vcard")
OFFLINE_LIMIT = 5000  # per user, for every server (ejabberd's max_user_offline_messages)


def roost_config() -> str:
    """roost.toml for the data directory; the ports and flags are on the command line."""
    modules = ", ".join(f'"{m}"' for m in ROOST_MODULES)
    return (
        "# Written by benchmarks/compare: the modules every compared server runs, no more.\n"
        "[modules]\n"
        f"enabled = [{modules}]\n"
        "\n"
        "[limits]\n"
        f"offline_messages = {OFFLINE_LIMIT}\n"
    )


class Roost(Peer):
    pythonpath: str | None = None  # roost's source to run (set by compare.main); None: installed
    commit: str | None = None

    def __init__(self, *, tls: bool = False) -> None:
        super().__init__(
            name="roost-tls" if tls else "roost",
            label="roost (STARTTLS)" if tls else "roost",
            tls=tls,
        )
        transport = (
            "clients STARTTLS first (roost's self-signed certificate): the column to hold "
            "against PyJabber, which requires TLS"
            if tls
            else "plain TCP"
        )
        self.notes = [
            "`roost up --allow-plaintext --registration`, direct-TLS and WebSocket listeners "
            f"off, default SQLite store; {transport}",
            f"config (roost.toml): modules.enabled = {', '.join(ROOST_MODULES)}; turned off: "
            f"{', '.join(ROOST_OFF)} (MAM, carbons, blocking and CSI are on by default); "
            f"limits.offline_messages {OFFLINE_LIMIT}; roost has no rate limits or shapers",
        ]

    def version(self) -> str:
        from importlib.metadata import version

        python = sys.version.split()[0]
        if Roost.commit is not None:
            where = f"commit {Roost.commit}, run from `git archive HEAD src`"
        else:
            describe = run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
            where = f"{describe.strip()} work tree"
        return f"roost {version('roost')} ({where}), Python {python}"

    def prepare(self, directory: Path) -> None:
        (directory / "data").mkdir(parents=True, exist_ok=True)
        (directory / "data" / "roost.toml").write_text(roost_config())

    def start(self, directory: Path) -> Running:
        port = free_port()
        command = roost_command(directory / "data", port)
        env = {"PYTHONPATH": Roost.pythonpath} if Roost.pythonpath else None
        self.record(command, env, PORT=str(port))
        return launch(self.name, command, port, directory / "roost.log", cwd=ROOT, env=env)


# -- ejabberd -------------------------------------------------------------------------------

EJABBERD_MODULES = ("mod_roster", "mod_offline", "mod_register", "mod_disco")


def ejabberd_config(port: int) -> str:
    """ejabberd.yml: one host, one c2s listener on loopback, shapers and throttles off."""
    return f"""\
# Written by benchmarks/compare: a single-host, c2s-only ejabberd for load tests.
hosts:
  - {VHOST}
loglevel: warning
auth_method: internal
auth_password_format: scram
# No wait between registrations from one address (the default is 600 s).
registration_timeout: infinity
# A c2s process's queue limit, far above anything a benchmark queues.
max_fsm_queue: 1000000
shaper: {{}}
shaper_rules:
  c2s_shaper: none
  max_user_sessions: 10
  max_user_offline_messages: {OFFLINE_LIMIT}
access_rules:
  c2s:
    allow: all
  register:
    allow: all
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    starttls_required: false
    shaper: none
    access: c2s
    max_stanza_size: 262144
    backlog: 1024
modules:
  mod_disco: {{}}
  mod_offline: {{}}
  mod_roster: {{}}
  mod_register:
    access: register
    ip_access: all
    password_strength: 0
"""


class Ejabberd(Peer):
    def __init__(self) -> None:
        super().__init__(name="ejabberd", label="ejabberd")
        self.notes = [
            "Debian's ejabberd package (`apt-get install ejabberd`); the BEAM started as the "
            "current user with the arguments `ejabberdctl foreground` uses (ejabberdctl would "
            "`su` to the ejabberd user when run as root), plus `+S 1:1 +SDcpu 1:1` (one "
            "scheduler and one dirty CPU scheduler, so it uses one core like roost), "
            "`+sbwt none +sbwtdcpu none +sbwtdio none` (idle schedulers sleep instead of "
            "spinning, so CPU time is work done), Erlang distribution on a loopback port "
            "without epmd",
            "config (ejabberd.yml): mnesia (default), auth_password_format scram, c2s on plain "
            "TCP (starttls false); turned off: shapers (`shaper: {}`, c2s_shaper none, "
            "listener shaper none), the registration throttle (registration_timeout "
            "infinity), password strength check; max_fsm_queue 1000000, listener backlog "
            "1024 (the default 5 drops connections at 100 concurrent logins); modules: "
            f"{', '.join(EJABBERD_MODULES)} only (no mod_mam, mod_carboncopy, "
            "mod_stream_mgmt, mod_csi, mod_blocking, mod_pubsub/PEP, mod_vcard, mod_caps, "
            "mod_ping; no s2s or HTTP listeners)",
        ]

    def install(self) -> None:
        apt_install("ejabberd")
        if shutil.which("erl") is None:
            raise ServerError("ejabberd is installed but erl is not on PATH")

    def version(self) -> str:
        otp = run(
            [
                "erl",
                "-noshell",
                "-eval",
                'io:format("~s", [erlang:system_info(otp_release)]), halt().',
            ]
        )
        return f"ejabberd {dpkg_version('ejabberd')} (Debian), Erlang/OTP {otp.strip()}"

    @staticmethod
    def _erl_libs() -> str:
        ctl = Path("/usr/sbin/ejabberdctl")
        if ctl.exists():
            match = re.search(r"^ERL_LIBS='?([^'\n]+)'?", ctl.read_text(), re.MULTILINE)
            if match:
                return match.group(1)
        found = glob.glob("/usr/lib/*/ejabberd-*")
        if not found:
            raise ServerError("cannot find ejabberd's Erlang libraries")
        return str(Path(found[0]).parent)

    def prepare(self, directory: Path) -> None:
        for sub in ("spool", "log"):
            (directory / sub).mkdir(parents=True, exist_ok=True)

    def start(self, directory: Path) -> Running:
        port = free_port()
        config = directory / "ejabberd.yml"
        config.write_text(ejabberd_config(port))
        dist_port = free_port()
        cookie = secrets.token_hex(8)
        node = f"roostbench{os.getpid()}@localhost"
        env = {
            "EJABBERD_CONFIG_PATH": str(config),
            "EJABBERD_LOG_PATH": str(directory / "log" / "ejabberd.log"),
            "ERL_LIBS": self._erl_libs(),
            "ERL_MAX_PORTS": "32000",
            "ERL_MAX_ETS_TABLES": "1400",
            "ERL_CRASH_DUMP": str(directory / "log" / "erl_crash.dump"),
            "ERL_CRASH_DUMP_BYTES": "0",
            "HOME": str(directory),
        }
        command = [
            *taskset(SERVER_CORE),
            "erl",
            "-sname",
            node,
            "-setcookie",
            cookie,
            "-erl_epmd_port",
            str(dist_port),
            "-start_epmd",
            "false",
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "+K",
            "true",
            "+P",
            "250000",
            "+S",
            "1:1",
            "+SDcpu",
            "1:1",
            "+sbwt",
            "none",
            "+sbwtdcpu",
            "none",
            "+sbwtdio",
            "none",
            "-mnesia",
            "dir",
            f'"{directory / "spool"}"',
            "-s",
            "ejabberd",
            "-noinput",
        ]
        shown = dict(env)
        shown.pop("HOME")
        self.record(command, shown, COOKIE=cookie, DIST_PORT=str(dist_port), NODE=node)
        return launch(self.name, command, port, directory / "log" / "console.log", env=env)


# -- Prosody --------------------------------------------------------------------------------

PROSODY_MODULES = ("roster", "saslauth", "disco", "register")


def prosody_config(directory: Path, port: int) -> str:
    """prosody.cfg.lua: one host, c2s on loopback only, no s2s/HTTP, no limits."""
    modules = ", ".join(f'"{m}"' for m in PROSODY_MODULES)
    return f"""\
-- Written by benchmarks/compare: a single-host, c2s-only Prosody for load tests.
daemonize = false
run_as_root = true -- only matters when the benchmark runs as root
pidfile = "{directory}/prosody.pid"
data_path = "{directory}/data"
certificates = "{directory}/certs"
log = {{ warn = "{directory}/prosody.log" }}
network_backend = "epoll"

interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}

c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"

allow_registration = true
-- Loopback is exempt from registration limits; no throttle is set (registration_throttle_max
-- and min_seconds_between_registrations unset).
registration_allowlist = {{ "127.0.0.1", "::1" }}

-- Auto-loaded besides these: presence, message, iq, offline, c2s. Not loaded, so off:
-- limits (rate limits), tls, carbons, mam, smacks, csi, pep, vcard, ping, blocklist.
modules_enabled = {{ {modules} }}
modules_disabled = {{ "s2s", "s2s_auth_certs" }}

VirtualHost "{VHOST}"
"""


class Prosody(Peer):
    def __init__(self) -> None:
        super().__init__(name="prosody", label="Prosody")
        self.notes = [
            "Debian's prosody package (`apt-get install prosody`), `prosody --config FILE -F` "
            "(foreground) as the current user",
            "config (prosody.cfg.lua): storage internal (files), authentication "
            "internal_hashed (SCRAM-SHA-1 hashes, PLAIN allowed unencrypted), network_backend "
            "epoll, c2s on loopback only; modules_enabled "
            f"{', '.join(PROSODY_MODULES)} (plus the auto-loaded presence, message, iq, "
            "offline, c2s); turned off: s2s, HTTP, and by not loading them mod_limits (rate "
            "limits), mod_tls (so no STARTTLS), mod_carbons, mod_mam, mod_smacks, mod_csi, "
            "mod_pep, mod_vcard, mod_ping, mod_blocklist; loopback exempt from registration "
            "limits",
        ]

    def install(self) -> None:
        apt_install("prosody")
        if shutil.which("prosody") is None:
            raise ServerError("prosody is installed but not on PATH")

    def version(self) -> str:
        lua = "?"
        prosody = shutil.which("prosody")
        if prosody:
            first = Path(prosody).read_text(errors="replace").splitlines()[0]
            match = re.search(r"lua(\d\.\d)", first)
            lua = match.group(1) if match else first
        return f"Prosody {dpkg_version('prosody')} (Debian), Lua {lua}"

    def prepare(self, directory: Path) -> None:
        for sub in ("data", "certs"):
            (directory / sub).mkdir(parents=True, exist_ok=True)

    def start(self, directory: Path) -> Running:
        port = free_port()
        config = directory / "prosody.cfg.lua"
        config.write_text(prosody_config(directory, port))
        command = [*taskset(SERVER_CORE), "prosody", "--config", str(config), "-F"]
        self.record(command)  # the port is in the config file
        return launch(self.name, command, port, directory / "console.log")


PEERS: dict[str, Callable[[], Peer]] = {
    "roost": Roost,
    "roost-tls": lambda: Roost(tls=True),
    "ejabberd": Ejabberd,
    "prosody": Prosody,
    "pyjabber": PyJabber,
}
