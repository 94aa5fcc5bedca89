"""roost in a box for tests: start a whole server inside a test.

``running_server()`` is an async context manager that starts a complete node (SQLite storage,
TLS, every default module) on ephemeral loopback ports in a temporary data directory and
stops it cleanly afterwards. The pytest plugin (:mod:`roost.testing.plugin`, installed as a
``pytest11`` entry point) exposes it as the ``roost_server`` fixture.
"""

from roost.testing.server import RunningServer, running_server

__all__ = ["RunningServer", "running_server"]
