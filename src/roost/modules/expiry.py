"""Expiry rounds shared by the modules that keep messages (offline storage, the archive).

A module calls :func:`expire_before` from a timer (``Module.every``) with its setting's value;
a setting of 0 keeps everything. Every node of a cluster sharing one store runs its rounds,
which is harmless: the deletes are idempotent, and a round costs one indexed DELETE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

EXPIRY_INTERVAL = 3600.0  # seconds between expiry rounds


async def expire_before(
    keep: float, remove: Callable[[float], Awaitable[int]], what: str, now: float | None = None
) -> int:
    """Remove what is older than ``keep`` seconds through ``remove(before)``; how many."""
    if keep <= 0:
        return 0
    before = (time.time() if now is None else now) - keep
    try:
        removed = await remove(before)
    except Exception as exc:  # a failing or gated store: the next round tries again
        log.warning("%s expiry failed: %s", what, exc)
        return 0
    if removed:
        log.info("%s expiry: %d messages older than %.0f s removed", what, removed, keep)
    return removed
