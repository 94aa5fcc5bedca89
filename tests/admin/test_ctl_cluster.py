"""`roost ctl --node NAME` and `--all` against a cluster of three nodes in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from roost.admin.client import RemoteError
from roost.admin.protocol import EXIT_FAILED, EXIT_NODE_DOWN, EXIT_OK, EXIT_USAGE, nodes_exit_code
from roost.admin.remote import AdminFiles, connect
from roost.cluster.ca import issue
from roost.testing.rawclient import RawClient
from roost.testing.server import (
    RunningCluster,
    RunningServer,
    _cluster_credentials,
    running_cluster,
    running_server,
)
from tests.admin.conftest import Outcome, run_cli

NODES = ["node1", "node2", "node3"]

CtlOn = Callable[..., Awaitable[Outcome]]


@pytest.fixture
def ctl_on(capsys: pytest.CaptureFixture[str]) -> CtlOn:
    """``await ctl_on(node, "status", "--all")``: `roost ctl` through that node's socket."""

    async def run(node: RunningServer, *args: str) -> Outcome:
        return await run_cli(capsys, ["ctl", "--socket", str(node.socket), *args])

    return run


def _peers(node: RunningServer) -> set[str]:
    assert node.server.cluster is not None
    return set(node.server.cluster.mesh.peers())


async def _online(node: RunningServer, user: str) -> RawClient:
    client = await RawClient.logged_in(node.host, node.port, user, cert=node.cert, resource="r")
    await client.send("<presence/>")
    await client.expect("presence")
    return client


async def test_status_and_nodes_answer_for_every_node_in_both_output_modes(
    tmp_path: Path, ctl_on: CtlOn
) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        result = await ctl_on(cluster[0], "--all", "status", "--json")
        assert result.code == EXIT_OK, result.err
        assert sorted(result.json) == NODES
        assert all(reply["ok"] for reply in result.json.values())
        assert [reply["result"]["node"] for reply in result.json.values()] == NODES
        digests = {reply["result"]["config_digest"] for reply in result.json.values()}
        assert len(digests) == 1  # configured alike: only the nodes' own settings differ

        human = await ctl_on(cluster[0], "status", "--all")
        header, *rows = human.out.splitlines()
        assert header.split()[:3] == ["NODE", "PID", "VERSION"]
        assert [row.split()[0] for row in rows] == NODES

        # node2's view of the cluster, asked through node1.
        seen = await ctl_on(cluster[0], "--node", "node2", "nodes", "--json")
        assert seen.code == EXIT_OK, seen.err
        [(asked, reply)] = seen.json.items()
        view = {row["name"]: row for row in reply["result"]}
        assert asked == "node2"
        assert view["node2"]["self"] is True
        assert view["node1"]["link"] == view["node3"]["link"] == "up"
        assert cluster[0].server.cluster is not None
        assert view["node1"]["address"] == f"127.0.0.1:{cluster[0].server.cluster.address[1]}"

        every = await ctl_on(cluster[0], "nodes", "--all")
        header, *rows = every.out.splitlines()
        assert header.split() == ["NODE", "SEES", "ADDRESS", "LINK", "RTT", "SESSIONS"]
        assert len(rows) == 9  # three nodes, each seeing three


async def test_sessions_groups_and_kick_find_a_user_on_another_node(
    tmp_path: Path, ctl_on: CtlOn
) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        await cluster[0].create_user("alice")
        alice = await _online(cluster[1], "alice")
        await cluster.until(
            lambda: all(n.server.sessions.has_user("alice@localhost") for n in cluster.nodes)
        )

        sessions = await ctl_on(cluster[0], "sessions", "--all", "--json")
        assert sessions.code == EXIT_OK
        found = {node: reply["result"] for node, reply in sessions.json.items()}
        assert found["node1"] == found["node3"] == []
        assert [s["jid"] for s in found["node2"]] == ["alice@localhost/r"]
        human = await ctl_on(cluster[0], "sessions", "--all")
        assert human.out.splitlines()[1].split()[:2] == ["node2", "alice@localhost/r"]

        groups = await ctl_on(cluster[2], "groups", "sessions", "--all", "--json")
        assert groups.code == EXIT_OK
        for reply in groups.json.values():
            [group] = reply["result"]
            assert (group["group"], group["members"], group["by_node"]) == (
                "alice@localhost",
                1,
                {"node2": 1},
            )
        scopes = await ctl_on(cluster[2], "groups")
        assert scopes.out.splitlines()[1].split()[:2] == ["sessions", "1"]

        # kick is cluster-wide in a cluster: node1 holds none of alice's sessions, node2 does.
        kicked = await ctl_on(cluster[0], "kick", "alice@localhost")
        assert kicked.code == EXIT_OK, kicked.err
        assert kicked.out.strip() == "kicked alice@localhost/r (on node2)"
        assert kicked.err == ""  # the other nodes' not-found is no failure
        assert await alice.stream_error() == "policy-violation"
        again = await ctl_on(cluster[0], "kick", "alice@localhost", "--json")
        assert again.code == EXIT_FAILED
        assert {r["error"]["code"] for r in again.json.values()} == {"not-found"}


def _max_stanza_size(cluster: RunningCluster) -> list[int]:
    return [n.server.config.max_stanza_size for n in cluster.nodes]


async def test_config_set_applies_on_every_node_and_status_shows_their_versions(
    tmp_path: Path, ctl_on: CtlOn
) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        changed = await ctl_on(cluster[1], "config", "set", "limits.max_stanza_size", "70000")
        assert changed.code == EXIT_OK, changed.err
        assert _max_stanza_size(cluster) == [70000] * 3
        header, *rows = changed.out.splitlines()
        assert header.split()[:3] == ["NODE", "KEY", "VALUE"]
        assert [row.split()[:4] for row in rows] == [
            [node, "limits.max_stanza_size", "70000", "applied"] for node in NODES
        ]

        status = await ctl_on(cluster[0], "config", "status", "--json")
        assert status.code == EXIT_OK
        versions = {node: reply["result"]["version"] for node, reply in status.json.items()}
        assert versions == {"node1": 2, "node2": 2, "node3": 2}
        assert len({reply["result"]["digest"] for reply in status.json.values()}) == 1
        alike = await ctl_on(cluster[0], "config", "status")
        assert "the nodes are configured alike" in alike.out

        # Changed on node3 alone: the others' digest differs from node3's, and it shows.
        alone = await ctl_on(cluster[0], "--node", "node3", "config", "set", "mam.max_page", "99")
        assert alone.code == EXIT_OK, alone.err
        assert [n.server.config.mam_max_page for n in cluster.nodes] == [250, 250, 99]
        drifted = await ctl_on(cluster[0], "config", "status")
        assert drifted.code == EXIT_OK
        assert "drift: 2 configurations in the cluster" in drifted.out
        assert drifted.out.rstrip().splitlines()[-1].endswith(": node3")

        # A node's own address is no cluster-wide setting.
        own = await ctl_on(cluster[0], "config", "set", "cluster.listen", "127.0.0.1:7999")
        assert own.code == EXIT_USAGE
        assert "cluster.listen names or places one node: change it with --node NAME" in own.err

        # A value the schema refuses fails on the asking node, and no other node is asked.
        refused = await ctl_on(cluster[0], "config", "set", "limits.max_stanza_size", "tiny")
        assert refused.code == EXIT_USAGE
        assert "limits.max_stanza_size" in refused.err
        assert _max_stanza_size(cluster) == [70000] * 3


async def test_a_node_that_does_not_answer_in_time_is_an_error_not_a_hang(
    tmp_path: Path, ctl_on: CtlOn
) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        assert cluster[2].server.cluster is not None
        cluster[2].server.cluster.mesh.unsubscribe("admin")  # linked, but deaf to admin
        result = await ctl_on(cluster[0], "--all", "--node-timeout", "0.2", "status", "--json")
        assert result.code == EXIT_NODE_DOWN
        assert [result.json[n]["ok"] for n in ("node1", "node2")] == [True, True]
        assert result.json["node3"]["error"]["code"] == "node-timeout"
        assert "roost: node3: node3 did not answer within 0.2 s (node-timeout)" in result.err

        human = await ctl_on(cluster[0], "--all", "--node-timeout", "0.2", "status")
        assert human.code == EXIT_NODE_DOWN
        assert [row.split()[0] for row in human.out.splitlines()[1:]] == ["node1", "node2"]


async def test_a_stopped_node_is_reported_and_stop_all_stops_the_rest_self_last(
    tmp_path: Path, ctl_on: CtlOn
) -> None:
    async with running_cluster(tmp_path, nodes=3) as cluster:
        typo = await ctl_on(cluster[0], "--node", "node4", "status")
        assert typo.code == EXIT_USAGE
        assert "no node 'node4' in the cluster" in typo.err
        single = await ctl_on(cluster[0], "--all", "user", "add", "bob@localhost")
        assert single.code == EXIT_USAGE
        assert "runs on one node only" in single.err

        await cluster[2].server.stop()
        await cluster.until(lambda: "node3" not in _peers(cluster[0]))
        result = await ctl_on(cluster[0], "--all", "status", "--json")
        assert result.code == EXIT_NODE_DOWN
        assert result.json["node3"]["error"]["code"] == "node-unreachable"
        nodes = await ctl_on(cluster[0], "nodes", "--json")
        assert {row["name"]: row["link"] for row in nodes.json}["node3"] == "down"

        stopped = await ctl_on(cluster[0], "stop", "--all", "--json")
        assert stopped.code == EXIT_NODE_DOWN  # node3 could not be asked
        assert stopped.json["node2"]["result"]["stopped"] is True
        assert stopped.json["node1"]["ok"] is True
        await cluster[0].server.wait_stopped()
        await cluster[1].server.wait_stopped()


@asynccontextmanager
async def _node(data_dir: Path, name: str, join: list[str]) -> AsyncIterator[RunningServer]:
    """A node of a cluster with a data directory of its own (overrides not shared)."""
    _cluster_credentials(data_dir, ["node1", "node2"])
    async with running_server(
        data_dir,
        cluster_node=name,
        cluster_listen="127.0.0.1:0",
        cluster_join=join,
        cluster_heartbeat_timeout=2.0,
    ) as node:
        yield node


async def test_a_node_down_during_config_set_shows_drift_and_takes_the_change_when_back(
    tmp_path: Path, ctl_on: CtlOn
) -> None:
    async with _node(tmp_path / "1", "node1", []) as first:
        assert first.server.cluster is not None
        host, port = first.server.cluster.address
        async with _node(tmp_path / "2", "node2", [f"{host}:{port}"]) as second:
            await RunningCluster([first, second]).connected()
            await second.server.stop()
        await RunningCluster([first]).until(lambda: not _peers(first))

        changed = await ctl_on(first, "config", "set", "mam.max_page", "99", "--json")
        assert changed.code == EXIT_NODE_DOWN
        assert changed.json["node1"]["result"]["applied"] is True
        assert changed.json["node2"]["error"]["code"] == "node-unreachable"
        missed = await ctl_on(first, "config", "status")
        assert missed.code == EXIT_NODE_DOWN
        assert "roost: node2: node2 is not linked to node1 now (node-unreachable)" in missed.err

        async with _node(tmp_path / "2", "node2", [f"{host}:{port}"]) as back:
            sync = back.server.control.config_sync
            assert sync is not None
            while back.server.config.mam_max_page != 99:
                async with asyncio.timeout(10):
                    await sync.changed()
            assert sync.taken == 1
            status = await ctl_on(first, "config", "status", "--json")
            assert status.code == EXIT_OK, status.err
            assert len({reply["result"]["digest"] for reply in status.json.values()}) == 1
            assert status.json["node2"]["result"]["overrides"] == {"mam.max_page": "99"}
            audit = (tmp_path / "2" / "audit.log").read_text()
            assert '"kind": "sync", "key": "mam.max_page", "value": "99"' in audit


async def test_remote_ctl_needs_an_administrator_certificate_and_never_runs_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_cluster(tmp_path, nodes=2, admin_listen="127.0.0.1:0") as cluster:
        listener = cluster[1].server.control.remote
        assert listener is not None
        host, port = listener.address
        alice = issue(tmp_path, "alice", admin=True).directory
        remote = ["ctl", "--remote", f"{host}:{port}", "--credentials", str(alice)]

        status = await run_cli(capsys, [*remote, "--all", "status", "--json"])
        assert status.code == EXIT_OK, status.err
        assert sorted(status.json) == ["node1", "node2"]
        changed = await run_cli(capsys, [*remote, "config", "set", "mam.max_page", "77"])
        assert changed.code == EXIT_OK, changed.err
        assert [n.server.config.mam_max_page for n in cluster.nodes] == [77, 77]
        audit = (tmp_path / "audit.log").read_text()  # both nodes' (a shared data directory)
        assert '"admin": "alice", "address": "127.0.0.1:' in audit
        assert '"from_node": "node2"' in audit  # node1 ran it for alice, asked by node2

        code = await run_cli(capsys, [*remote, "bench", "1 + 1"])
        assert code.code == EXIT_FAILED
        assert "runs code in the node" in code.err
        files = AdminFiles.in_directory(alice)
        with await asyncio.to_thread(connect, (host, port), files, 10) as client:
            with pytest.raises(RemoteError) as shell:
                await asyncio.to_thread(client.request, "shell")
            assert shell.value.code == "local-only"

        # A node's certificate, signed by the same CA, is no administrator's.
        node = tmp_path / "cluster" / "nodes" / "node1"
        impostor = AdminFiles(node / "ca.pem", node / "node.pem", node / "node-key.pem")
        with await asyncio.to_thread(connect, (host, port), impostor, 10) as client:
            with pytest.raises(RemoteError) as refused:
                await asyncio.to_thread(client.request, "status")
            assert refused.value.code == "forbidden"
        assert listener.statistics() == {"accepted": 4, "refused": 1}

        missing = await run_cli(capsys, ["ctl", "--remote", f"{host}:{port}", "status"])
        assert missing.code == EXIT_USAGE
        assert "--remote needs --credentials" in missing.err


async def test_remote_administration_is_off_by_default_and_needs_a_cluster(tmp_path: Path) -> None:
    async with running_server(tmp_path / "a") as node:
        assert node.server.control.remote is None
    with pytest.raises(ValueError, match=r"admin\.listen needs cluster\.node"):
        async with running_server(tmp_path / "b", admin_listen="127.0.0.1:0"):
            pass


def test_exit_code_of_several_nodes_is_the_highest_unless_found_anywhere() -> None:
    ok = {"ok": True, "result": None}
    missing = {"ok": False, "error": {"code": "not-found", "message": ""}}
    down = {"ok": False, "error": {"code": "node-timeout", "message": ""}}
    assert nodes_exit_code({"a": ok, "b": ok}) == EXIT_OK
    assert nodes_exit_code({"a": ok, "b": missing}) == EXIT_FAILED
    assert nodes_exit_code({"a": ok, "b": missing}, found_anywhere=True) == EXIT_OK
    assert nodes_exit_code({"a": missing, "b": missing}, found_anywhere=True) == EXIT_FAILED
    assert nodes_exit_code({"a": ok, "b": missing, "c": down}, found_anywhere=True) == 4
