"""The node's table of stream management sessions that can be resumed (XEP-0198 §5).

:class:`ResumptionTable` holds the sessions that can be resumed, including ones whose
connection dropped (*detached*): they stay routable and keep queueing stanzas for up to ``max``
seconds; a client that comes back with ``<resume h previd/>`` gets the queued stanzas again,
and when the window closes the session ends and its unacknowledged messages are routed again
(to other resources or offline storage), never dropped. The table remembers the final count of
recently ended sessions, so that a late ``<resume/>`` is answered with ``<failed h='N'/>`` and
the client knows which of its stanzas arrived.

It lives apart from :mod:`roost.c2s.sm` (one stream's counters and queue, compiled for the
message path) because it is the node's, touched only when streams enable, detach, resume and
end, and stays plain Python.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from roost.c2s.session import C2SSession

_EXPIRED_MEMORY: Final = 10_000  # ended sessions whose final count is remembered


class ResumptionTable:
    """Resumable sessions of one node, by stream management id."""

    __slots__ = ("_closing", "_deadlines", "_ended", "_sessions")

    def __init__(self) -> None:
        self._sessions: dict[str, C2SSession] = {}
        self._deadlines: dict[str, float] = {}  # detached sessions: id -> when they expire
        self._closing: dict[str, C2SSession] = {}  # no longer resumable, not yet ended
        self._ended: OrderedDict[str, tuple[str, int]] = OrderedDict()  # id -> (user, handled)

    def add(self, sm_id: str, session: C2SSession) -> None:
        self._sessions[sm_id] = session

    def detached(self, sm_id: str, deadline: float) -> None:
        self._deadlines[sm_id] = deadline

    def attached(self, sm_id: str) -> None:
        self._deadlines.pop(sm_id, None)

    def take(self, sm_id: str, user: str) -> C2SSession | None:
        """The session a client of ``user`` asks to resume, if it can be."""
        session = self._sessions.get(sm_id)
        if session is None or session.username != user:
            return None
        return session

    def closing(self, sm_id: str) -> None:
        """The session is ending: it can no longer be resumed (its final count comes later)."""
        session = self._sessions.pop(sm_id, None)
        self._deadlines.pop(sm_id, None)
        if session is not None:
            self._closing[sm_id] = session

    def ending(self, sm_id: str, user: str) -> C2SSession | None:
        """A session of ``user`` that is ending but has not ended yet (see :meth:`closing`)."""
        session = self._closing.get(sm_id)
        return session if session is not None and session.username == user else None

    def ended(self, sm_id: str, user: str, handled: int) -> None:
        self._sessions.pop(sm_id, None)
        self._deadlines.pop(sm_id, None)
        self._closing.pop(sm_id, None)
        self._ended[sm_id] = (user, handled)
        while len(self._ended) > _EXPIRED_MEMORY:
            self._ended.popitem(last=False)

    def final_count(self, sm_id: str, user: str) -> int | None:
        """The handled count of a session that ended, for ``<failed h='N'/>``."""
        entry = self._ended.get(sm_id)
        return entry[1] if entry is not None and entry[0] == user else None

    def expired(self, now: float) -> list[C2SSession]:
        """Detached sessions whose resumption window has closed as of ``now``."""
        return [
            self._sessions[sm_id]
            for sm_id, deadline in list(self._deadlines.items())
            if deadline <= now and sm_id in self._sessions
        ]

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def detached_count(self) -> int:
        return len(self._deadlines)
