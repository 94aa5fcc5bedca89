"""The client side of SASL (RFC 6120 §6): PLAIN, and SCRAM-SHA-1/-256 through ``scramp``.

PLAIN is preferred when the server offers it: it costs the generator nothing, whereas SCRAM
makes the client derive keys too (thousands of hash rounds per login), which at ten thousand
logins would load the generator as much as the server. SCRAM is the fallback for servers that
do not offer PLAIN, or when asked for by name.
"""

from __future__ import annotations

import base64
from typing import Any, Final

from roost.bench.load.scan import child_text, first_child_name

AUTO: Final = ("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256")


class SaslError(Exception):
    """The exchange cannot go on; the message says why."""


def choose(offered: list[str], wanted: str) -> str:
    """The mechanism to use: ``wanted``, or for ``auto`` the first of :data:`AUTO` offered."""
    preference = AUTO if wanted == "auto" else (wanted,)
    for mechanism in preference:
        if mechanism in offered:
            return mechanism
    raise SaslError(f"no usable SASL mechanism (the server offers {', '.join(offered)})")


class Exchange:
    """One authentication: :meth:`initial`, then a :meth:`challenge` per challenge, then
    :meth:`success` with the data of ``<success/>``."""

    __slots__ = ("_final_sent", "_scram", "mechanism")

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self._scram: Any = None  # a scramp.ScramClient
        self._final_sent = False

    def initial(self, username: str, password: str) -> bytes:
        if self.mechanism == "PLAIN":
            return b"\0" + username.encode() + b"\0" + password.encode()
        from scramp import ScramClient  # imported only for servers without PLAIN

        self._scram = ScramClient([self.mechanism], username, password)
        return str(self._scram.get_client_first()).encode()

    def challenge(self, data: str) -> bytes:
        from scramp import ScramException

        scram = self._scram
        if scram is None:
            raise SaslError("unexpected SASL challenge")
        try:
            if not self._final_sent:
                scram.set_server_first(data)
                self._final_sent = True
                return str(scram.get_client_final()).encode()
            # Some servers send the server-final message as a challenge and wait for an empty
            # response before <success/>.
            scram.set_server_final(data)
        except ScramException as exc:
            raise SaslError(f"SCRAM: {exc}") from None
        self._scram = None
        return b""

    def success(self, data: str) -> None:
        """Check the server's proof that it knows the password (SCRAM's server signature)."""
        scram = self._scram
        if scram is None:
            return  # PLAIN, or verified in a challenge already
        from scramp import ScramException

        if not data:
            raise SaslError("the server did not prove it knows the password (no SCRAM final)")
        try:
            scram.set_server_final(data)
        except ScramException as exc:
            raise SaslError(f"SCRAM: {exc}") from None


def failure_reason(failure: bytes) -> str:
    """``not-authorized`` (and the server's text, if any) from a ``<failure/>``."""
    condition = first_child_name(failure) or "unknown"
    text = child_text(failure, b"text")
    return f"{condition}: {text}" if text else condition


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "="


def decode(element: bytes) -> str:
    """The text of a ``<challenge>`` or ``<success>``, base64-decoded. Raises SaslError."""
    gt = element.find(b">")
    if element[gt - 1 : gt] == b"/":
        return ""
    text = element[gt + 1 : element.rfind(b"<")].strip()
    if text in (b"", b"="):
        return ""
    try:
        return base64.b64decode(text, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise SaslError("undecodable SASL data") from None
