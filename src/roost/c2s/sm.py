"""Stream management (XEP-0198): acknowledgements and resumption, the protocol state.

Theory of operation. Once a client sends ``<enable/>`` both sides count the stanzas they have
*handled*. The client asks with ``<r/>`` and the server answers ``<a h='N'/>`` with the number
of client stanzas it has handled; the server asks too, and the client's ``<a h='N'/>`` lets the
server forget the stanzas the client has confirmed. Counters are modulo 2^32 (§4).

"Handled" is taken strictly on the server side: a client stanza counts only once roost is done
with it durably (delivered to a live session, stored offline, archived, or answered with an
error), so a stanza the client sent just before its connection died is either counted or, if
it was not finished, resent by the client after resumption. Nothing acknowledged is lost.

:class:`StreamManagement` is the per-session state: the inbound count, and the queue of
stanzas sent but not yet acknowledged, kept to be sent again. It does no I/O. A stanza written
to the client is queued as the bytes written (serialized under the session's framing), not as
its element: the queue holds every client's last stanzas for as long as acknowledgements take,
and bytes are one object the garbage collector never tracks, where an element is several. Queued
elements (a thousand clients, a few unacknowledged stanzas each) were what made young
collections run at all under ``benchmarks.mam_cost`` (5,000 messages/s, SM and MAM on): perf
put the collector at about 9 µs of event-loop CPU per message, and freeing the old elements at
a few more; queued as bytes, no collection ran.
A stanza is parsed back into an element only in the rare case it must be routed again
(:func:`roost.c2s.sm_session.unsent`).

The node's table of sessions that can be resumed is :mod:`roost.c2s.resumption`. This
module is compiled with mypyc (:mod:`roost.compiled`): its methods run for every stanza
of a stream with stream management.
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from typing import Final

from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StreamError

MODULO: Final = 2**32
REQUEST_EVERY: Final = 8  # unacknowledged stanzas after which the server asks for an ack
# The listener's sweep (once a second) asks a stream with unacknowledged stanzas for an ack,
# but only on the stream's own turn, one sweep in SWEEP_TURN, and streams' turns are spread
# over the sweeps. Asking every such stream in every sweep made all of them
# answer at once: with 1,000 clients at 2,000 messages/s in all, the burst of <r/> writes and
# <a/> answers held the event loop for ~10 ms once a second, and p99 latency went from
# 0.5 ms to 11-14 ms (docs/benchmarks-mam.md).
SWEEP_TURN: Final = 5
_turns = itertools.count()  # hands out the streams' turns in rotation


def _sm(name: str, attrs: dict[str, str] | None = None) -> Element:
    return Element(name, ns.SM, attrs)


def sm_bytes(name: str, **attrs: str) -> bytes:
    """A top-level SM element (``<r/>``, ``<a h='3'/>``...) as bytes for the client stream."""
    return _sm(name, dict(attrs)).to_bytes()


def failed(condition: str, h: int | None = None) -> bytes:
    """``<failed/>`` with a stanza error condition and, when known, the handled count."""
    element = _sm("failed", {"h": str(h)} if h is not None else None)
    element.add(condition, ns.STANZAS)
    return element.to_bytes()


def handled_count_too_high(h: int, sent: int) -> StreamError:
    """XEP-0198 §4: the client acknowledged stanzas the server never sent."""
    extra = _sm("handled-count-too-high", {"h": str(h), "send-count": str(sent)})
    return StreamError("undefined-condition", "acknowledged more than was sent", extra=extra)


def parse_h(element: Element) -> int:
    try:
        h = int(element.attrs.get("h", ""))
    except ValueError:
        raise StreamError("undefined-condition", "'h' must be a number") from None
    if not 0 <= h < MODULO:
        raise StreamError("undefined-condition", "'h' out of range")
    return h


class StreamManagement:
    """Counters and the unacknowledged queue of one stream. See the module docstring."""

    __slots__ = (
        "_last_request",
        "_sweeps",
        "acked",
        "handled",
        "id",
        "max_queue",
        "queue",
        "resume",
        "sent",
        "tokens",
    )

    def __init__(self, *, resume: bool, max_queue: int) -> None:
        self.id = secrets.token_urlsafe(12) if resume else ""
        self.resume = resume
        self.max_queue = max_queue
        self.handled = 0  # client stanzas handled (mod 2^32)
        self.sent = 0  # stanzas sent to the client (mod 2^32)
        self.acked = 0  # the client's last acknowledged count
        # Sent, not yet acknowledged, oldest first: what was written to the client, or the
        # element while the client is away (written when it resumes). See the module docstring.
        self.queue: deque[bytes | Element] = deque()
        # Stanzas another node forwarded, by their number here: that node keeps a copy until
        # the client acknowledges them (see roost.cluster.forwarding). Created when needed.
        self.tokens: dict[int, tuple[str, int]] | None = None
        self._last_request = 0
        self._sweeps = next(_turns) % SWEEP_TURN  # sweeps since this stream's last turn

    def count_handled(self) -> None:
        self.handled = (self.handled + 1) % MODULO

    def track(self, stanza: bytes | Element, token: tuple[str, int] | None = None) -> None:
        """Record a stanza sent (its bytes), or queued for a detached client (the element)."""
        self.sent = (self.sent + 1) % MODULO
        self.queue.append(stanza)
        if token is not None:
            if self.tokens is None:
                self.tokens = {}
            self.tokens[self.sent] = token

    @property
    def overflowing(self) -> bool:
        return len(self.queue) > self.max_queue

    def ack(self, h: int) -> list[tuple[str, int]]:
        """The client has handled ``h`` stanzas in all; forget those. Raises StreamError.

        Returns the tokens of forwarded stanzas that are now acknowledged.
        """
        confirmed = (h - self.acked) % MODULO
        if confirmed > len(self.queue):
            raise handled_count_too_high(h, self.sent)
        for _ in range(confirmed):
            self.queue.popleft()
        done: list[tuple[str, int]] = []
        tokens = self.tokens
        if tokens:
            for i in range(1, confirmed + 1):
                token = tokens.pop((self.acked + i) % MODULO, None)
                if token is not None:
                    done.append(token)
        self.acked = h
        return done

    def should_request(self) -> bool:
        """True every REQUEST_EVERY unacknowledged stanzas, to keep the queue short."""
        if (self.sent - self._last_request) % MODULO >= REQUEST_EVERY and self.queue:
            self._last_request = self.sent
            return True
        return False

    def sweep_request(self) -> bool:
        """Called once per sweep: True when this sweep should ask for an acknowledgement.

        On the stream's turn (one sweep in SWEEP_TURN), if stanzas wait for one: a client
        that went quiet is asked again every SWEEP_TURN sweeps, never more often.
        """
        self._sweeps += 1
        if self._sweeps < SWEEP_TURN:
            return False
        self._sweeps = 0
        if not self.queue:
            return False
        self._last_request = self.sent
        return True

    def __repr__(self) -> str:
        return (
            f"<StreamManagement id={self.id!r} handled={self.handled} sent={self.sent} "
            f"unacked={len(self.queue)}>"
        )
