"""JIDs (RFC 7622): parsing, PRECIS normalisation, and a cache in front of both.

The localpart is enforced with the PRECIS ``UsernameCaseMapped`` profile and the resourcepart
with ``OpaqueString`` (RFC 7622 §3.3, §3.4), both from precis-i18n. The domainpart
(RFC 7622 §3.2) is lowercased and NFC-normalised, and IDNA-encodable names are checked with
the standard library's ``idna`` codec; IP literals are accepted as they are.

Normalising a JID costs microseconds (PRECIS walks every code point), while a busy server sees
the same few thousand JIDs over and over, so :func:`parse_jid` keeps a bounded LRU cache keyed
by the raw string.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from functools import lru_cache
from typing import Final

import precis_i18n

__all__ = ["JID", "InvalidJID", "parse_jid"]

_LOCALPART = precis_i18n.get_profile("UsernameCaseMapped")
_RESOURCEPART = precis_i18n.get_profile("OpaqueString")

MAX_PART: Final = 1023  # bytes, per part (RFC 7622 §3.2-3.4)
# RFC 7622 §3.3.1: characters a localpart may not contain, beyond what PRECIS disallows.
_LOCAL_FORBIDDEN: Final = frozenset("\"&'/:<>@")


class InvalidJID(ValueError):
    """The string is not a valid JID; the message says which part is wrong and why."""


class JID:
    """An immutable, normalised JID. Compare, hash and print it freely."""

    __slots__ = ("_bare", "_full", "domain", "local", "resource")

    local: str | None
    domain: str
    resource: str | None

    def __init__(self, local: str | None, domain: str, resource: str | None = None) -> None:
        # Parts are expected to be normalised already (use parse_jid / JID.of for raw input).
        self.local = local or None
        self.domain = domain
        self.resource = resource or None
        bare = f"{local}@{domain}" if local else domain
        self._bare = bare
        self._full = f"{bare}/{resource}" if resource else bare

    @staticmethod
    def of(value: str) -> JID:
        """Parse and normalise; raises :class:`InvalidJID`."""
        return parse_jid(value)

    @property
    def bare(self) -> JID:
        if self.resource is None:
            return self
        return JID(self.local, self.domain)

    @property
    def bare_str(self) -> str:
        return self._bare

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def is_domain(self) -> bool:
        return self.local is None and self.resource is None

    def with_resource(self, resource: str | None) -> JID:
        return JID(self.local, self.domain, resource)

    def __str__(self) -> str:
        return self._full

    def __repr__(self) -> str:
        return f"JID({self._full!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JID):
            return self._full == other._full
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._full)


def parse_jid(value: str) -> JID:
    """Parse a JID string (cached). Raises :class:`InvalidJID`."""
    return _parse_cached(value)


@lru_cache(maxsize=65536)
def _parse_cached(value: str) -> JID:
    return _parse(value)


def _parse(value: str) -> JID:
    # RFC 7622 §3.1: the first '/' separates the resource; the '@' before it the localpart.
    if not value:
        raise InvalidJID("empty JID")
    rest, slash, resource = value.partition("/")
    local, at, domain = rest.rpartition("@")
    if not at:
        local, domain = "", rest
    if at and not local:
        raise InvalidJID(f"empty localpart in {value!r}")
    if slash and not resource:
        raise InvalidJID(f"empty resourcepart in {value!r}")
    return JID(
        nodeprep(local) if local else None,
        nameprep(domain),
        resourceprep(resource) if resource else None,
    )


def _reason(exc: UnicodeError) -> str:
    return str(getattr(exc, "reason", exc))


def nodeprep(local: str) -> str:
    """Normalise a localpart (RFC 7622 §3.3)."""
    try:
        result: str = _LOCALPART.enforce(local)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid localpart {local!r}: {_reason(exc)}") from None
    if _LOCAL_FORBIDDEN.intersection(result):
        raise InvalidJID(f"invalid localpart {local!r}: contains a forbidden character")
    if len(result.encode()) > MAX_PART:
        raise InvalidJID("localpart longer than 1023 bytes")
    return result


def resourceprep(resource: str) -> str:
    """Normalise a resourcepart (RFC 7622 §3.4)."""
    try:
        result: str = _RESOURCEPART.enforce(resource)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid resourcepart {resource!r}: {_reason(exc)}") from None
    if len(result.encode()) > MAX_PART:
        raise InvalidJID("resourcepart longer than 1023 bytes")
    return result


def nameprep(domain: str) -> str:
    """Normalise a domainpart (RFC 7622 §3.2)."""
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain:
        raise InvalidJID("empty domainpart")
    if domain.startswith("[") and domain.endswith("]"):
        try:
            ipaddress.IPv6Address(domain[1:-1])
        except ValueError:
            raise InvalidJID(f"invalid IPv6 literal {domain!r}") from None
        return domain.lower()
    result = unicodedata.normalize("NFC", domain.lower())
    if len(result.encode()) > MAX_PART:
        raise InvalidJID("domainpart longer than 1023 bytes")
    for label in result.split("."):
        if not label:
            raise InvalidJID(f"empty label in domainpart {domain!r}")
        if len(label) > 63:
            raise InvalidJID(f"label longer than 63 characters in {domain!r}")
    if result.isascii():
        for ch in result:
            if not (ch.isalnum() or ch in "-._"):
                raise InvalidJID(f"invalid character {ch!r} in domainpart {domain!r}")
    else:
        try:
            result.encode("idna")
        except UnicodeError:
            raise InvalidJID(f"invalid internationalized domainpart {domain!r}") from None
    return result
