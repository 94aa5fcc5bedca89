"""pytest plugin: the ``roost_server`` fixture, a complete server per test.

Registered as a ``pytest11`` entry point, so any project with roost installed can use it::

    async def test_login(roost_server):
        jid = await roost_server.create_user("alice")
        ...connect a client to roost_server.host, roost_server.port...

Settings can be changed per test with the ``roost_config`` marker::

    @pytest.mark.roost_config(registration=True)
    async def test_register(roost_server): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roost.testing.server import RunningServer, running_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "roost_config(**settings): ServerConfig overrides for roost_server"
    )


@pytest.fixture
async def roost_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    overrides: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("roost_config"))):
        overrides.update(marker.kwargs)
    async with running_server(tmp_path / "roost", **overrides) as server:
        yield server
