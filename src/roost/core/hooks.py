"""Hooks: how modules take part in events without the core knowing them.

Two kinds, as in ejabberd: :meth:`Hooks.run` *notifies* every handler of an event, and
:meth:`Hooks.fold` threads a value through the handlers in priority order, each returning the
value for the next. A fold handler that returns ``None`` stops the fold and the result is
``None``; for stanza filters that means "handled or dropped, do nothing more". A handler that
returns :class:`Stop` ends the fold with the value it carries (an awaitable, say, for a stanza
whose handling the module took over).

Handlers run in ascending priority (lower first), in registration order within a priority.
Registration returns nothing; :meth:`remove` must be called with the same arguments, which the
module API (:mod:`roost.core.module`) does for every hook a module added when it stops.

Hooks are synchronous on purpose: they sit on the message path, and a coroutine per hook per
stanza would cost more than the work most handlers do. A handler that must wait (for storage)
returns an awaitable through the value it folds, and the caller decides how to wait for it.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[..., Any]
_SEQUENCE = itertools.count()


class Stop:
    """Returned by a fold handler to end the fold with ``value``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Hooks:
    __slots__ = ("_handlers",)

    def __init__(self) -> None:
        # name -> sorted list of (priority, sequence, handler); the tuple list is replaced, not
        # mutated, so that a fold in progress is unaffected by handlers added or removed by it.
        self._handlers: dict[str, list[tuple[int, int, Handler]]] = {}

    def add(self, name: str, handler: Handler, priority: int = 50) -> None:
        entries = list(self._handlers.get(name, ()))
        bisect.insort(entries, (priority, next(_SEQUENCE), handler), key=lambda e: e[:2])
        self._handlers[name] = entries

    def remove(self, name: str, handler: Handler, priority: int = 50) -> None:
        entries = self._handlers.get(name)
        if not entries:
            raise KeyError(f"no handler registered for hook {name!r}")
        for i, (p, _, h) in enumerate(entries):
            if p == priority and h == handler:
                rest = entries[:i] + entries[i + 1 :]
                if rest:
                    self._handlers[name] = rest
                else:
                    del self._handlers[name]
                return
        raise KeyError(f"{handler!r} is not registered for hook {name!r} at {priority}")

    def has(self, name: str) -> bool:
        return name in self._handlers

    def run(self, name: str, *args: Any) -> None:
        """Call every handler; an exception in one is logged and does not stop the others."""
        for _, _, handler in self._handlers.get(name, ()):
            try:
                handler(*args)
            except Exception:
                log.exception("hook %s: handler %r failed", name, handler)

    def fold(self, name: str, value: Any, *args: Any) -> Any:
        """Thread ``value`` through the handlers; ``None`` from a handler stops the fold."""
        for _, _, handler in self._handlers.get(name, ()):
            value = handler(value, *args)
            if value is None:
                return None
            if type(value) is Stop:
                return value.value
        return value

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def count(self) -> int:
        return sum(len(v) for v in self._handlers.values())
