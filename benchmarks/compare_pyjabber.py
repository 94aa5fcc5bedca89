"""PyJabber (PyPI ``pyjabber``), the other XMPP server written in Python, for ``compare``.

It is installed into a venv of its own under ``benchmarks/.work/`` and started through its
Python API by a small launcher this module writes (its CLI cannot keep it off non-loopback
addresses). Where PyJabber and the standard (or our generator) disagree, the launcher carries
a shim and ``PyJabber.notes`` says so; what cannot be bridged is listed in ``unsupported``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.compare_peer import WORK, Peer, Running, ServerError, free_port, launch, run, say
from benchmarks.harness import ROOT, SERVER_CORE, taskset

PYJABBER_VENV = WORK / "venv-pyjabber"
LAUNCHER = "launch-pyjabber"  # no .py: ruff and mypy leave it alone
PYJABBER_REQUIREMENTS = ("pyjabber==0.4.5", "greenlet")  # 0.4.5 forgets greenlet

# Run with the PyJabber venv's python: argv = client port, s2s port, database, cert directory.
PYJABBER_LAUNCHER = """\
import datetime, os, socket, sys
import xml.etree.ElementTree as ET

import uvloop
from loguru import logger

import pyjabber.server as pserver
from pyjabber.network.protocols.XMLProtocol import XMLProtocol
from pyjabber.server_parameters import Parameters

client_port, s2s_port, database, certs = sys.argv[1:5]

# Listen on loopback only (PyJabber also binds the address it would use to reach the outside).
pserver.setup_query_local_ip = lambda: None
# No HTTP server (admin page and upload service, always on localhost:9090): the upload plugin
# stays registered, as the server needs it, but nothing listens for its URLs.
pserver.HttpServer = lambda apps: None

# Compatibility shims, see PyJabber.notes in benchmarks/compare_pyjabber.py:
# 1. its SAX parser rejects the XML declaration clients send with each stream restart;
_data_received = XMLProtocol.data_received
def data_received(self, data):
    if data.startswith(b"<?xml"):
        data = data[data.index(b"?>") + 2:]
    _data_received(self, data)
XMLProtocol.data_received = data_received
# 2. it writes stanzas with ElementTree's "ns0:" prefixes; write jabber:client unprefixed.
ET.register_namespace("", "jabber:client")

# A self-signed certificate for localhost (PyJabber requires STARTTLS).
if not os.path.isfile(os.path.join(certs, "localhost_cert.pem")):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    with open(os.path.join(certs, "localhost_key.pem"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(os.path.join(certs, "localhost_cert.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))

logger.remove()
logger.add(sys.stderr, level="WARNING")
defaults = Parameters()
params = Parameters(
    host="localhost",
    client_port=int(client_port),
    server_port=int(s2s_port),
    family=socket.AF_INET,
    connection_timeout=3600,
    database_path=database,
    cert_path=certs,
    message_persistence=True,
    plugins=defaults.plugins,
    items=defaults.items,
)
uvloop.run(pserver.Server(params).start())
"""


def pyjabber_launcher() -> str:
    return PYJABBER_LAUNCHER


class PyJabber(Peer):
    def __init__(self) -> None:
        super().__init__(name="pyjabber", label="PyJabber", tls=True)
        self.presence_wait = {"idle": 10.0, "chat": 5.0, "presence": 10.0}
        self.scale = {"users": 1000, "presence_clients": 100}
        self.setup_timeout = 240.0  # 40 s on a quiet machine
        self.scale_why = (
            "its logins run at 10-20/s (PBKDF2 at 100,000 iterations on its one core), and each "
            "roster change reloads its whole roster table, so subscribing 1,000 users to 10 "
            "contacts each would take most of an hour; per session and per notification the "
            "figures still compare"
        )
        self.notes = [
            f"PyPI {PYJABBER_REQUIREMENTS[0]} in its own venv "
            f"({PYJABBER_VENV.relative_to(ROOT)}; 0.4.5 does not declare its greenlet "
            "dependency, so it is installed too), started through its Python API (the CLI has "
            "no way to keep it off non-loopback addresses): SQLite database file, message "
            "persistence (offline storage) on",
            "config (Parameters): its default plugins (disco, PubSub, register, data forms, "
            "ping, XML-RPC, HTTP upload: none of them is on the message or presence path, and "
            "it cannot start without the PubSub and upload ones); turned off: its HTTP "
            "server (admin page and upload, always on port 9090); it has no rate limits or "
            "shapers to turn off",
            "requires STARTTLS (no option to turn it off), so clients STARTTLS: compare it "
            "with the roost (STARTTLS) column; PLAIN only, each login and registration "
            "hashes with PBKDF2-SHA-256 at 100,000 iterations in a process pool (also pinned "
            "to core 0; its CPU is counted)",
            "shims, in the launcher: the XML declaration at the start of a stream restart is "
            "cut before PyJabber's parser sees it (its SAX parser fails on it; RFC 6120 "
            "allows it); ElementTree's jabber:client prefix is registered as the default "
            "namespace so stanzas go out as <message><body> rather than "
            "<ns0:message><ns0:body> (in no namespace a client knows); the idle-connection "
            "timeout is raised from 60 s to 3,600 s (it would drop idle sessions while "
            "thousands log in)",
            "it never sends a client's initial presence back to it (RFC 6121 §4.2.2) nor, on "
            "login, its contacts' presence (§4.2.3), so the generator's wait for them "
            "(`--presence-timeout`) is 10 s (idle, presence) and 5 s (chat) instead of the "
            "whole set-up timeout (set-up, not measured)",
            "measured with at most 1,000 idle sessions and 100 presence users (10 contacts "
            "each, as for the others): see the footnotes. Its presence figures hold for the "
            "first presence run on a fresh database only: when the subscriptions exist "
            "already, it also notifies users who are not contacts (the generator counts "
            "them as `extra`)",
        ]

    @property
    def python(self) -> Path:
        return PYJABBER_VENV / "bin" / "python"

    def _importable(self) -> bool:
        if not self.python.exists():
            return False
        done = subprocess.run(
            [str(self.python), "-c", "import pyjabber.server, greenlet"],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def install(self) -> None:
        if self._importable():
            return
        say(f"installing {' '.join(PYJABBER_REQUIREMENTS)} from PyPI into {PYJABBER_VENV}")
        PYJABBER_VENV.parent.mkdir(parents=True, exist_ok=True)
        if not self.python.exists():
            run([sys.executable, "-m", "venv", "--clear", str(PYJABBER_VENV)])
        run([str(self.python), "-m", "pip", "install", "--quiet", *PYJABBER_REQUIREMENTS])
        if not self._importable():
            raise ServerError("PyJabber installed but `import pyjabber.server` fails")

    def version(self) -> str:
        out = run(
            [
                str(self.python),
                "-c",
                "import sys, importlib.metadata as m; "
                "print(m.version('pyjabber'), sys.version.split()[0])",
            ]
        ).split()
        return f"PyJabber {out[0]} (PyPI), Python {out[1]}"

    def prepare(self, directory: Path) -> None:
        (directory / "certs").mkdir(parents=True, exist_ok=True)
        (directory / LAUNCHER).write_text(pyjabber_launcher())

    def start(self, directory: Path) -> Running:
        port = free_port()
        s2s_port = free_port()
        command = [
            *taskset(SERVER_CORE),
            str(self.python),
            str(directory / LAUNCHER),
            str(port),
            str(s2s_port),
            str(directory / "pyjabber.db"),
            str(directory / "certs"),
        ]
        self.record(command, PORT=str(port), S2S_PORT=str(s2s_port))
        # It can take minutes to close a thousand TLS sessions on SIGTERM: 5 s, then SIGKILL
        # (its SQLite database is committed after every change).
        return launch(
            self.name, command, port, directory / "console.log", cwd=directory, stop_timeout=5
        )
