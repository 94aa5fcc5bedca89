"""What a load run is asked to do: :class:`LoadConfig`, its checks, and the user list.

Checking happens before anything connects, so that a mistake costs nothing: :meth:`check`
raises :class:`ValueError` naming the field (``window``, ``roster_size``...); the command line
shows the same message with the option's spelling (``--window``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

SCENARIOS: Final = ("idle", "chat", "presence")
MECHANISMS: Final = ("auto", "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256")
DEFAULT_ROSTER_SIZE: Final = 10


@dataclass(frozen=True, slots=True)
class User:
    """An account to log in as: ``local@domain`` and its password."""

    local: str
    password: str

    def jid(self, domain: str) -> str:
        return f"{self.local}@{domain}"


@dataclass(slots=True)
class LoadConfig:
    """A load run. Only ``host``, ``port`` and ``domain`` have no default.

    Users are ``users`` when given (say, read by :func:`read_users`), else
    ``{user_prefix}{i}@{domain}`` for ``i`` in ``range(clients)``, all with ``password``.
    ``rate`` None means a closed loop (``window`` messages in flight per sender); a number
    means an open loop at that many messages (chat) or presence changes (presence) a second.
    """

    host: str
    port: int
    domain: str
    scenario: str = "chat"
    clients: int = 100
    duration: float = 10.0
    rate: float | None = None
    window: int = 1
    max_messages: int | None = None
    starttls: bool = False
    direct_tls: bool = False
    verify: bool = False  # verify the server's certificate (and name) when using TLS
    cafile: str | None = None  # trust anchors for verify; default: the system's
    users: list[User] | None = None
    register: bool = False  # create the accounts first (XEP-0077), 'conflict' meaning done
    user_prefix: str = "load"
    password: str = "load-secret"
    resource: str = "load"
    mechanism: str = "auto"  # auto: PLAIN if offered, else SCRAM-SHA-1, else SCRAM-SHA-256
    stream_management: bool = False  # enable XEP-0198 after binding and answer the server's <r/>
    server_pid: int | None = None  # read this process's RSS from /proc before and after
    connect_concurrency: int = 100  # logins (or registrations) in progress at once
    login_timeout: float = 30.0  # per client, from connect to bound resource
    drain: float = 5.0  # after sending stops, how long to wait for the last deliveries
    roster_size: int | None = None  # presence: contacts per client (even; default 10)
    initial_presence: bool = True  # idle and chat: send <presence/> after logging in
    setup_timeout: float = 60.0  # presence: subscriptions and initial presence exchange
    # The longest wait in the set-up for presence the server sends by itself: each client's
    # initial presence echoed (RFC 6121 §4.2.2) and, for the presence scenario, the contacts'
    # presence (§4.2.3). None: setup_timeout. Lower it for a server that sends neither.
    presence_timeout: float | None = None
    seed: int | None = None  # peer choice; None: a random run
    progress: Callable[[str], None] | None = field(default=None, compare=False)

    @property
    def presence_wait(self) -> float:
        """Seconds the set-up waits for the server's own presence (see presence_timeout)."""
        if self.presence_timeout is None:
            return self.setup_timeout
        return min(self.presence_timeout, self.setup_timeout)

    @property
    def closed_loop(self) -> bool:
        return self.rate is None

    @property
    def transport(self) -> str:
        if self.direct_tls:
            return "direct TLS"
        return "STARTTLS" if self.starttls else "plain TCP"

    def user_list(self) -> list[User]:
        if self.users is not None:
            return self.users[: self.clients]
        return [User(f"{self.user_prefix}{i}", self.password) for i in range(self.clients)]

    def contacts(self) -> int:
        """Roster size for the presence scenario (0 for the others)."""
        if self.scenario != "presence":
            return 0
        if self.roster_size is not None:
            return self.roster_size
        # The default shrinks for small runs: an even number below the client count.
        return min(DEFAULT_ROSTER_SIZE, (self.clients - 1) // 2 * 2)

    def check(self) -> LoadConfig:
        """Raise ValueError for anything that cannot run; return self."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if not self.domain:
            raise ValueError("domain must not be empty")
        _at_least("clients", self.clients, 1)
        _positive("duration", self.duration)
        _at_least("window", self.window, 1)
        _at_least("connect_concurrency", self.connect_concurrency, 1)
        _positive("login_timeout", self.login_timeout)
        _positive("setup_timeout", self.setup_timeout)
        if self.presence_timeout is not None:
            _positive("presence_timeout", self.presence_timeout)
        if self.drain < 0:
            raise ValueError("drain must not be negative")
        if self.rate is not None:
            _positive("rate", self.rate)
            if self.scenario == "idle":
                raise ValueError("rate does not apply to the idle scenario")
            if self.window != 1:
                raise ValueError("window applies to the closed loop only (without rate)")
        if self.max_messages is not None:
            _at_least("max_messages", self.max_messages, 1)
            if self.scenario == "idle":
                raise ValueError("max_messages does not apply to the idle scenario")
        if self.starttls and self.direct_tls:
            raise ValueError("choose one of starttls and direct_tls")
        if (self.verify or self.cafile) and not (self.starttls or self.direct_tls):
            raise ValueError("verify and cafile need starttls or direct_tls")
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}")
        if self.users is not None:
            if self.register and any(not u.password for u in self.users):
                raise ValueError("every user needs a password")
            if len(self.users) < self.clients:
                raise ValueError(
                    f"clients is {self.clients} but only {len(self.users)} users are given"
                )
        elif not self.user_prefix:
            raise ValueError("user_prefix must not be empty")
        if self.scenario == "chat" and self.clients < 2:
            raise ValueError("the chat scenario needs at least 2 clients")
        if self.scenario == "presence":
            self._check_presence()
        elif self.roster_size is not None:
            raise ValueError("roster_size applies to the presence scenario only")
        if self.server_pid is not None and not os.path.exists(f"/proc/{self.server_pid}/status"):
            raise ValueError(f"server_pid {self.server_pid}: no such process in /proc")
        return self

    def _check_presence(self) -> None:
        if self.clients < 3:
            raise ValueError("the presence scenario needs at least 3 clients")
        size = self.contacts()
        # Contacts are the nearest clients on a ring, half on each side: an even number,
        # smaller than the number of clients, makes every pair mutual and distinct.
        if size < 2 or size % 2:
            raise ValueError(f"roster_size must be an even number of at least 2, got {size}")
        if size >= self.clients:
            raise ValueError(f"roster_size ({size}) must be smaller than clients ({self.clients})")

    def parameters(self) -> dict[str, Any]:
        """The run's parameters for reports: everything but the users and callbacks."""
        data = asdict(self)
        data.pop("progress", None)
        data.pop("password", None)
        users = data.pop("users", None)
        data["users"] = "given" if users is not None else f"{self.user_prefix}N"
        data["roster_size"] = self.contacts() or None
        return data


def _at_least(name: str, value: int, least: int) -> None:
    if value < least:
        raise ValueError(f"{name} must be at least {least}, got {value}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be greater than 0, got {value}")


def read_users(path: str | Path, domain: str) -> list[User]:
    """Read ``jid password`` lines (blank lines and ``#`` comments skipped).

    A JID may be a bare local part; a full one must be in ``domain`` (the stream is opened to
    ``domain``, so other users could not log in through it). Raises ValueError naming the line.
    """
    users: list[User] = []
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'jid password'")
        jid, password = parts[0], parts[1].strip()
        local, at, rest = jid.partition("@")
        if at and rest.split("/", 1)[0] != domain:
            raise ValueError(f"{path}:{number}: {jid} is not in domain {domain}")
        if not local:
            raise ValueError(f"{path}:{number}: no user name in {jid!r}")
        users.append(User(local, password))
    if not users:
        raise ValueError(f"{path}: no users")
    return users


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port). Raises ValueError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:5222, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"not a port number: {port_text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return host, port
