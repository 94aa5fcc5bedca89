"""SASL for the server side (RFC 6120 §6): SCRAM-SHA-256, SCRAM-SHA-1 and PLAIN, Sans-I/O.

SCRAM (RFC 5802, RFC 7677) is delegated to ``scramp``. scramp asks for an account's stored keys
through a synchronous callback in the middle of the exchange, while roost fetches them from
storage with an ``await``; so the exchange is split at that point: :meth:`ScramExchange.start`
parses the client-first message and names the user, the caller fetches that user's
:class:`~roost.storage.base.ScramCredentials`, and :meth:`ScramExchange.challenge` continues.

An unknown user is not revealed: the exchange continues with made-up keys derived from the
user name and a per-process secret, and fails at the proof exactly like a wrong password.

Stored credentials are SCRAM salted keys (StoredKey, ServerKey), never passwords. PLAIN
(RFC 4616) is verified by recomputing the StoredKey from the password and the stored salt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Final

import scramp
from scramp.utils import saslprep

from roost.storage.base import ScramCredentials

__all__ = [
    "DEFAULT_ITERATIONS",
    "SCRAM_MECHANISMS",
    "SASLFailure",
    "ScramExchange",
    "make_credentials",
    "parse_plain",
    "verify_password",
]

SCRAM_MECHANISMS: Final = ("SCRAM-SHA-256", "SCRAM-SHA-1")
_HASHES: Final = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
DEFAULT_ITERATIONS: Final = 4096  # RFC 7677 §4: at least 4096
_DECOY_SECRET: Final = os.urandom(32)


class SASLFailure(Exception):
    """The exchange failed; ``condition`` is the RFC 6120 §6.5 failure element."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


def b64decode(data: str) -> bytes:
    """Decode SASL payload text; ``=`` alone means an empty response (RFC 6120 §6.4.2)."""
    data = data.strip()
    if data in ("", "="):
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        raise SASLFailure("incorrect-encoding", "invalid base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "="


def prepare_password(password: str) -> str:
    # SASLprep (RFC 4013), as RFC 5802 §2.2 requires and as SCRAM clients apply it.
    try:
        prepared: str = saslprep(password)
    except (UnicodeError, ValueError, scramp.ScramException):
        raise ValueError("the password contains characters that are not allowed") from None
    return prepared


def make_credentials(password: str, iterations: int = DEFAULT_ITERATIONS) -> list[ScramCredentials]:
    """Salted SCRAM keys for every supported hash, from a password that is then forgotten."""
    prepared = prepare_password(password)
    result = []
    for mechanism in SCRAM_MECHANISMS:
        salt = os.urandom(16)
        salted = hashlib.pbkdf2_hmac(_HASHES[mechanism], prepared.encode(), salt, iterations)
        result.append(_keys(mechanism, salted, salt, iterations))
    return result


def _keys(mechanism: str, salted: bytes, salt: bytes, iterations: int) -> ScramCredentials:
    name = _HASHES[mechanism]
    client_key = hmac.digest(salted, b"Client Key", name)
    stored_key = hashlib.new(name, client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", name)
    return ScramCredentials(mechanism, salt, iterations, stored_key, server_key)


def verify_password(credentials: ScramCredentials, password: str) -> bool:
    """Whether ``password`` matches the stored keys (constant-time comparison).

    Costs one PBKDF2 run (``iterations`` HMACs); callers run it off the event loop.
    """
    try:
        prepared = prepare_password(password)
    except ValueError:
        return False
    name = _HASHES[credentials.mechanism]
    salted = hashlib.pbkdf2_hmac(name, prepared.encode(), credentials.salt, credentials.iterations)
    computed = _keys(credentials.mechanism, salted, credentials.salt, credentials.iterations)
    return hmac.compare_digest(computed.stored_key, credentials.stored_key)


@dataclass(slots=True, frozen=True)
class PlainCredentials:
    authzid: str
    authcid: str
    password: str


def parse_plain(message: bytes) -> PlainCredentials:
    """Split a PLAIN message ``[authzid] NUL authcid NUL passwd`` (RFC 4616 §2)."""
    parts = message.split(b"\x00")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SASLFailure("malformed-request", "PLAIN needs authcid and password")
    try:
        authzid, authcid, password = (p.decode() for p in parts)
    except UnicodeDecodeError:
        raise SASLFailure("malformed-request", "PLAIN data is not UTF-8") from None
    return PlainCredentials(authzid, authcid, password)


class ScramExchange:
    """One server-side SCRAM exchange. Steps: start → challenge → finish."""

    __slots__ = (
        "_client_first",
        "_decoy_iterations",
        "_server",
        "authzid",
        "mechanism",
        "username",
    )

    def __init__(self, mechanism: str, decoy_iterations: int = DEFAULT_ITERATIONS) -> None:
        """``decoy_iterations`` should be what real accounts use, so that an unknown user's
        challenge looks like a known one's."""
        if mechanism not in _HASHES:
            raise SASLFailure("invalid-mechanism", mechanism)
        self.mechanism = mechanism
        self._decoy_iterations = decoy_iterations
        self.username = ""
        self.authzid = ""
        self._client_first = ""
        self._server: scramp.ScramServer | None = None

    def start(self, client_first: bytes) -> str:
        """Read the client-first message; return the user name it authenticates as."""
        try:
            text = client_first.decode()
        except UnicodeDecodeError:
            raise SASLFailure("malformed-request", "not UTF-8") from None
        # gs2-header: cbind-flag "," [authzid] "," ; then "n=" saslname "," "r=" nonce
        parts = text.split(",", 3)
        if len(parts) < 4 or parts[0] not in ("n", "y") or not parts[2].startswith("n="):
            if parts and parts[0].startswith("p"):
                raise SASLFailure("malformed-request", "channel binding is not offered")
            raise SASLFailure("malformed-request", "bad client-first message")
        if parts[1]:
            if not parts[1].startswith("a="):
                raise SASLFailure("malformed-request", "bad authzid")
            self.authzid = _unescape(parts[1][2:])
        username = _unescape(parts[2][2:])
        if not username:
            raise SASLFailure("malformed-request", "empty user name")
        self.username = username
        self._client_first = text
        return username

    def challenge(self, credentials: ScramCredentials | None) -> bytes:
        """The server-first message, given the user's stored keys (None when unknown)."""
        creds = credentials if credentials is not None else self._decoy()

        def auth_fn(_: str) -> tuple[bytes, bytes, bytes, int]:
            return creds.salt, creds.stored_key, creds.server_key, creds.iterations

        server = scramp.ScramMechanism(self.mechanism).make_server(auth_fn)
        try:
            server.set_client_first(self._client_first)
            first: str = server.get_server_first()
        except scramp.ScramException as exc:
            raise SASLFailure("malformed-request", str(exc)) from None
        self._server = server
        return first.encode()

    def finish(self, client_final: bytes) -> bytes:
        """Check the client's proof; return the server-final message (success data)."""
        server = self._server
        if server is None:
            raise SASLFailure("malformed-request", "unexpected response")
        try:
            server.set_client_final(client_final.decode())
            final: str = server.get_server_final()
        except (scramp.ScramException, UnicodeDecodeError):
            raise SASLFailure("not-authorized") from None
        return final.encode()

    def _decoy(self) -> ScramCredentials:
        # Deterministic per user name, so that probing twice gives the same salt.
        seed = hmac.digest(_DECOY_SECRET, self.username.encode(), "sha256")
        name = _HASHES[self.mechanism]
        size = hashlib.new(name).digest_size
        return ScramCredentials(
            self.mechanism, seed[:16], self._decoy_iterations, seed[:size], seed[-size:]
        )


def _unescape(saslname: str) -> str:
    # RFC 5802 §5.1: ',' is sent as '=2C' and '=' as '=3D'.
    return saslname.replace("=2C", ",").replace("=3D", "=")
