"""Suite-wide settings: every test runs on uvloop, the event loop production uses.

uvloop's transports differ from asyncio's (they are not ``asyncio.Transport`` instances, and
they flush and close differently), so tests on the default loop would test something other
than what ``roost up`` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], uvloop.Loop]]:
    return {"uvloop": uvloop.new_event_loop}
