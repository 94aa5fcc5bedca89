"""XMPP errors as values: stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3).

Two exception families, in the spirit of h11's Local/Remote split::

    XMPPError
    ├── StreamError    the peer broke the stream; answer <stream:error/> and close
    └── StanzaError    one stanza failed; answer <... type='error'/> and carry on

Builders (``service_unavailable()``, ``policy_violation()`` ...) return the exception so that
handlers can ``raise`` it or put it in a reply, and the one place that turns it into XML is
:meth:`StanzaError.reply_to` / :meth:`StreamError.to_element`.
"""

from __future__ import annotations

from typing import Final

from roost.xmpp import ns
from roost.xmpp.element import Element

# RFC 6120 §4.9.3: defined stream error conditions.
STREAM_CONDITIONS: Final = frozenset(
    {
        "bad-format",
        "bad-namespace-prefix",
        "conflict",
        "connection-timeout",
        "host-gone",
        "host-unknown",
        "improper-addressing",
        "internal-server-error",
        "invalid-from",
        "invalid-namespace",
        "invalid-xml",
        "not-authorized",
        "not-well-formed",
        "policy-violation",
        "remote-connection-failed",
        "reset",
        "resource-constraint",
        "restricted-xml",
        "see-other-host",
        "system-shutdown",
        "undefined-condition",
        "unsupported-encoding",
        "unsupported-feature",
        "unsupported-stanza-type",
        "unsupported-version",
    }
)

# RFC 6120 §8.3.3: stanza error conditions with their default error types (§8.3.2).
STANZA_CONDITIONS: Final[dict[str, str]] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class XMPPError(Exception):
    """Base of every protocol error roost reports to a peer."""

    condition: str
    text: str | None

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


class StreamError(XMPPError):
    """A stream-level error: the stream is closed after ``<stream:error/>`` is sent."""

    extra: Element | None

    def __init__(
        self, condition: str, text: str | None = None, *, extra: Element | None = None
    ) -> None:
        """``extra`` is an application-specific condition element (RFC 6120 §4.9.4)."""
        if condition not in STREAM_CONDITIONS:
            raise ValueError(f"unknown stream error condition {condition!r}")
        super().__init__(condition, text)
        self.extra = extra

    def to_element(self) -> Element:
        error = Element("error", ns.STREAM)
        error.add(self.condition, ns.STREAMS)
        if self.text:
            error.add_text("text", self.text, ns.STREAMS).attrs["xml:lang"] = "en"
        if self.extra is not None:
            error.append(self.extra)
        return error

    def to_bytes(self) -> bytes:
        """The error as sent inside a client stream, using the stream's ``stream:`` prefix."""
        inner = "".join(
            c.to_str(ns.STREAM) for c in self.to_element().children if not isinstance(c, str)
        )
        return f"<stream:error>{inner}</stream:error>".encode()


class StanzaError(XMPPError):
    """A stanza-level error, answered with an error stanza to the sender."""

    error_type: str
    extra: Element | None

    def __init__(
        self,
        condition: str,
        text: str | None = None,
        *,
        error_type: str | None = None,
        extra: Element | None = None,
    ) -> None:
        default_type = STANZA_CONDITIONS.get(condition)
        if default_type is None:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(condition, text)
        self.error_type = error_type or default_type
        self.extra = extra

    def to_element(self, by: str | None = None) -> Element:
        error = Element("error", ns.CLIENT, {"type": self.error_type})
        if by:
            error.attrs["by"] = by
        error.add(self.condition, ns.STANZAS)
        if self.text:
            error.add_text("text", self.text, ns.STANZAS).attrs["xml:lang"] = "en"
        if self.extra is not None:
            error.append(self.extra)
        return error

    def reply_to(self, stanza: Element, by: str | None = None) -> Element:
        """The error reply to ``stanza`` (RFC 6120 §8.3.1): addresses swapped, payload kept."""
        reply = Element(stanza.name, stanza.xmlns, dict(stanza.attrs), list(stanza.children))
        reply.attrs["type"] = "error"
        to = stanza.attrs.get("from")
        frm = stanza.attrs.get("to")
        reply.attrs.pop("to", None)
        reply.attrs.pop("from", None)
        if to is not None:
            reply.attrs["to"] = to
        if frm is not None:
            reply.attrs["from"] = frm
        if stanza.name == "iq":
            # An IQ error need not echo the request payload (RFC 6120 §8.3.1 makes it optional);
            # dropping it keeps errors small and avoids reflecting large payloads back.
            reply.children = []
        reply.children.append(self.to_element(by))
        return reply


def stream_error(condition: str, text: str | None = None) -> StreamError:
    return StreamError(condition, text)


def bad_request(text: str | None = None) -> StanzaError:
    return StanzaError("bad-request", text)


def conflict(text: str | None = None) -> StanzaError:
    return StanzaError("conflict", text)


def feature_not_implemented(text: str | None = None) -> StanzaError:
    return StanzaError("feature-not-implemented", text)


def forbidden(text: str | None = None) -> StanzaError:
    return StanzaError("forbidden", text)


def internal_server_error(text: str | None = None) -> StanzaError:
    return StanzaError("internal-server-error", text)


def item_not_found(text: str | None = None) -> StanzaError:
    return StanzaError("item-not-found", text)


def jid_malformed(text: str | None = None) -> StanzaError:
    return StanzaError("jid-malformed", text)


def not_acceptable(text: str | None = None) -> StanzaError:
    return StanzaError("not-acceptable", text)


def not_allowed(text: str | None = None) -> StanzaError:
    return StanzaError("not-allowed", text)


def not_authorized(text: str | None = None) -> StanzaError:
    return StanzaError("not-authorized", text)


def policy_violation(text: str | None = None) -> StanzaError:
    return StanzaError("policy-violation", text)


def remote_server_not_found(text: str | None = None) -> StanzaError:
    return StanzaError("remote-server-not-found", text)


def resource_constraint(text: str | None = None) -> StanzaError:
    return StanzaError("resource-constraint", text)


def service_unavailable(text: str | None = None) -> StanzaError:
    return StanzaError("service-unavailable", text)


def unexpected_request(text: str | None = None) -> StanzaError:
    return StanzaError("unexpected-request", text)
