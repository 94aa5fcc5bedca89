"""`roost ctl gates` and `roost ctl gate open|close|auto`, on one node and across a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.admin.protocol import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from roost.gate.storage import STORAGE_GATE
from roost.testing import RunningServer
from roost.testing.server import running_cluster
from tests.admin.conftest import Outcome, run_cli
from tests.gate.test_cluster import until


async def ctl(capsys: pytest.CaptureFixture[str], server: RunningServer, *args: str) -> Outcome:
    return await run_cli(capsys, ["ctl", "--socket", str(server.socket), *args])


async def test_gates_lists_the_storage_gate_with_its_numbers(
    roost_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await roost_server.create_user("alice")
    result = await ctl(capsys, roost_server, "gates")
    assert result.code == EXIT_OK, result.err
    header, row = result.out.splitlines()
    assert header.split() == [
        "GATE",
        "PARTITION",
        "STATE",
        "FAILED",
        "SLOW",
        "IN",
        "WINDOW",
        "CALLS",
        "REFUSED",
        "LAST",
        "TRIP",
    ]
    assert row.split()[:5] == ["storage", "roost.db", "closed", "0%", "0%"]
    [data] = (await ctl(capsys, roost_server, "gates", "--json")).json
    assert (data["gate"], data["partition"], data["state"]) == ("storage", "roost.db", "closed")
    assert data["calls"] >= 2


async def test_an_operator_forces_the_gate_open_for_a_while_then_hands_it_back(
    roost_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    opened = await ctl(capsys, roost_server, "gate", "open", "storage", "--ttl", "90")
    assert opened.code == EXIT_OK, opened.err
    assert opened.out.strip() == "storage: forced open for 1m 30s"
    listing = await ctl(capsys, roost_server, "gates")
    assert "forced-open (1m 29s)" in listing.out or "forced-open (1m 30s)" in listing.out
    with pytest.raises(Exception, match="forced open by operator"):
        await roost_server.create_user("alice")
    closed = await ctl(capsys, roost_server, "gate", "close", "storage", "roost.db")
    assert closed.out.strip() == "storage[roost.db]: forced closed until `gate auto`"
    await roost_server.create_user("alice")  # the partition's own override wins
    auto = await ctl(capsys, roost_server, "gate", "auto", "storage", "--json")
    assert auto.json == {"gate": "storage", "partition": "", "mode": "auto", "ttl": None}
    gate = roost_server.server.gates.gate(STORAGE_GATE)
    assert gate.state("roost.db") == "closed"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("gate", "open", "push"), EXIT_FAILED, "no gate 'push' (gates: storage)"),
        (("gate", "open", "storage", "--ttl", "0"), EXIT_USAGE, "--ttl must be a positive"),
        (("gate", "auto", "storage", "--ttl", "5"), EXIT_USAGE, "unrecognized arguments"),
        (("gate", "ajar", "storage"), EXIT_USAGE, "invalid choice"),
    ],
)
async def test_bad_gate_commands_say_what_is_wrong(
    roost_server: RunningServer,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    result = await ctl(capsys, roost_server, *args)
    assert result.code == code
    assert message in result.err


async def test_the_shell_lists_the_gates(roost_server: RunningServer) -> None:
    rows = await roost_server.eval("gates()")
    assert [(r["gate"], r["partition"]) for r in rows] == [("storage", "roost.db")]


async def test_a_gate_forced_on_one_node_is_forced_on_all_and_listed_by_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        gates = [node.server.gates.gate(STORAGE_GATE) for node in cluster.nodes]
        result = await ctl(
            capsys, cluster[1], "gate", "open", "storage", "roost.db", "--ttl", "600"
        )
        assert result.code == EXIT_OK, result.err
        await until(
            [node.server.gates for node in cluster.nodes],
            lambda: all(g.state("roost.db") == "forced-open" for g in gates),
        )
        listing = await ctl(capsys, cluster[2], "gates", "--json")
        assert listing.code == EXIT_OK, listing.err
        assert sorted(listing.json) == ["node1", "node2", "node3"]
        for reply in listing.json.values():
            [row] = reply["result"]
            assert row["state"] == "forced-open"
            assert row["override"]["node"] == "node2"
        text = await ctl(capsys, cluster[0], "gates")
        assert text.out.splitlines()[0].split()[0] == "NODE"
        assert sum("forced-open" in line for line in text.out.splitlines()) == 3
        await ctl(capsys, cluster[0], "gate", "auto", "storage", "roost.db")
        await until(
            [node.server.gates for node in cluster.nodes],
            lambda: all(g.state("roost.db") == "closed" for g in gates),
        )
