"""Helpers for the control-plane tests: run `roost ctl` / `roost shell` against a server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from roost.cli import main
from roost.testing import RunningServer


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


Ctl = Callable[..., Awaitable[Outcome]]


async def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Outcome:
    """Run the `roost` CLI in a thread (it blocks, the server runs on this loop)."""

    def call() -> int:
        try:
            return main(argv)
        except SystemExit as exc:  # argparse's usage errors
            return exc.code if isinstance(exc.code, int) else 1

    code = await asyncio.to_thread(call)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


@pytest.fixture
def ctl(roost_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> Ctl:
    """``await ctl("status", "--json")``: `roost ctl` against the test's server."""

    async def run(*args: str) -> Outcome:
        return await run_cli(capsys, ["ctl", "--socket", str(roost_server.socket), *args])

    return run
