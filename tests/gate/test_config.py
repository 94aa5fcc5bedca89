"""Gate thresholds come from the [gates] settings and change with a reload."""

from __future__ import annotations

from typing import Any

import pytest

from roost.admin import reload
from roost.admin.commands import CommandError
from roost.config import ServerConfig
from roost.gate import Policy, policy_of
from roost.gate.storage import STORAGE_GATE, GatedStorage
from roost.testing import RunningServer


def test_the_default_settings_are_the_default_policy() -> None:
    assert policy_of(ServerConfig()) == Policy(call_timeout=5.0)


async def test_the_server_starts_with_its_store_behind_the_storage_gate(
    roost_server: RunningServer,
) -> None:
    server = roost_server.server
    assert isinstance(server.storage, GatedStorage)
    assert server.storage.gate is server.gates.gate(STORAGE_GATE)
    await roost_server.create_user("alice")
    [row] = server.gates.statistics()
    assert (row["gate"], row["partition"], row["state"]) == ("storage", "roost.db", "closed")
    assert row["calls"] >= 2  # user_exists, create_user


@pytest.mark.roost_config(gate_open_for=30.0)
async def test_thresholds_change_with_a_reload(roost_server: RunningServer) -> None:
    server = roost_server.server
    gate = server.gates.gate(STORAGE_GATE)
    assert gate.policy.open_for == 30.0
    (roost_server.data_dir / "overrides.toml").write_text(
        "[gates]\nconsecutive_failures = 2\nslow_call_threshold = 0.5\n"
    )
    report = await reload.reload(server)
    assert {"gates.consecutive_failures", "gates.slow_call_threshold"} <= set(report.applied)
    assert (gate.policy.consecutive_failures, gate.policy.slow_call_threshold) == (2, 0.5)
    assert server.gates.gate("push").policy.consecutive_failures == 2  # gates made later too


async def test_a_failed_reload_leaves_the_thresholds_as_they_were(
    roost_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(reload, "_STEPS", [*reload._STEPS, broken])
    server = roost_server.server
    before = server.gates.gate(STORAGE_GATE).policy
    (roost_server.data_dir / "overrides.toml").write_text("[gates]\nopen_for = 60.0\n")
    with pytest.raises(CommandError, match="the disk is on fire"):
        await reload.reload(server)
    assert server.gates.gate(STORAGE_GATE).policy == before
