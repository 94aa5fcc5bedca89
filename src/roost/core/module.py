"""The module API: how an XMPP feature plugs into a roost node.

A module is a class with a ``name``; the server creates one instance per node when the module
is enabled in the configuration, calls :meth:`Module.start`, and :meth:`Module.stop` when it shuts
down. Everything a module registers through this API (hooks, IQ handlers, disco features,
stream features) is recorded and undone by :meth:`Module.stop`, so a module cannot leave a
dangling handler behind and never needs to write its own cleanup for them.

Modules find each other through :meth:`Module.depends` rather than importing each other's
instances, which keeps the load order explicit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from roost.core.iq import IQHandler, Scope

if TYPE_CHECKING:
    from roost.core.server import Server

M = TypeVar("M", bound="Module")

_REGISTRY: dict[str, type[Module]] = {}


def register_module(cls: type[M]) -> type[M]:
    """Class decorator: make a module available by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two modules are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def module_class(name: str) -> type[Module]:
    """The module class called ``name``, importing ``roost.modules.<name>`` if needed."""
    if name not in _REGISTRY:
        import importlib

        try:
            importlib.import_module(f"roost.modules.{name}")
        except ModuleNotFoundError as exc:
            raise ValueError(f"unknown module {name!r}") from exc
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"roost.modules.{name} defines no module named {name!r}") from None


class Module:
    """Base class of every feature module. See the module docstring."""

    name: ClassVar[str] = ""
    #: Features advertised in disco#info of the server (XEP-0030) while the module runs.
    server_features: ClassVar[tuple[str, ...]] = ()
    #: Features advertised in disco#info of a user's bare JID.
    account_features: ClassVar[tuple[str, ...]] = ()

    def __init__(self, server: Server) -> None:
        self.server = server
        self.log = logging.getLogger(f"roost.modules.{self.name}")
        self._undo: list[Callable[[], None]] = []

    def start(self) -> None:
        """Register handlers. Called once, after every enabled module was created."""

    def stop(self) -> None:
        """Undo every registration, most recent first."""
        while self._undo:
            self._undo.pop()()

    # -- registration helpers --------------------------------------------------------------

    def hook(self, name: str, handler: Callable[..., Any], priority: int = 50) -> None:
        hooks = self.server.hooks
        hooks.add(name, handler, priority)
        self._undo.append(lambda: hooks.remove(name, handler, priority))

    def iq(self, scope: Scope, xmlns: str, handler: IQHandler) -> None:
        table = self.server.iq
        table.register(scope, xmlns, handler)
        self._undo.append(lambda: table.unregister(scope, xmlns, handler))

    def every(self, interval: float, callback: Callable[[], object]) -> None:
        """Call ``callback`` every ``interval`` seconds until the module stops (housekeeping
        such as expiry; one timer, not a task)."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def tick() -> None:
            nonlocal handle
            handle = loop.call_later(interval, tick)
            callback()

        handle = loop.call_later(interval, tick)
        self._undo.append(lambda: handle.cancel())

    def depends(self, name: str, cls: type[M]) -> M:
        """Another enabled module this one needs."""
        module = self.server.modules.get(name)
        if module is None:
            raise RuntimeError(f"module {self.name!r} needs module {name!r}, which is not enabled")
        if not isinstance(module, cls):
            raise TypeError(f"module {name!r} is a {type(module).__name__}, not {cls.__name__}")
        return module

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
