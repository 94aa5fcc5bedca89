"""`roost ctl bench`: micro-benchmarks inside the live node, seeing the node as `server`."""

from __future__ import annotations

import pytest

from roost.testing import RunningServer
from tests.admin.conftest import Ctl

FAST = ["--samples", "2", "--sample-duration", "0.05"]


async def test_bench_measures_code_that_reads_the_live_node(
    roost_server: RunningServer, ctl: Ctl
) -> None:
    await roost_server.create_user("alice")
    outcome = await ctl("--json", "bench", "await server.storage.user_exists('alice@localhost')",
                        *FAST)  # fmt: skip
    assert outcome.code == 0, outcome.err
    result = outcome.json
    assert result["kind"] == "continuous"
    (run,) = result["results"]
    assert run["concurrency"] == 1
    assert len(run["samples"]) == 2
    assert run["operations"] > 0
    assert run["qps"] > 0


async def test_bench_text_table_and_squeeze(ctl: Ctl) -> None:
    outcome = await ctl("bench", "len(server.sessions)", "--squeeze", "--max", "2", *FAST)
    assert outcome.code == 0, outcome.err
    header, *rows = outcome.out.splitlines()
    assert header.split()[:4] == ["Code", "||", "Samples", "QPS"]
    assert {row.split()[-1] for row in rows if row.strip()} >= {"*"}


async def test_bench_reports_code_that_fails(ctl: Ctl) -> None:
    outcome = await ctl("bench", "server.no_such_attribute", *FAST)
    assert outcome.code == 1
    assert "no_such_attribute" in outcome.err


@pytest.mark.roost_config(admin_shell=False)
async def test_bench_is_refused_where_the_shell_is(ctl: Ctl) -> None:
    outcome = await ctl("bench", "1 + 1", *FAST)
    assert outcome.code == 1
    assert "admin.shell = false" in outcome.err


async def test_bench_is_audited(roost_server: RunningServer, ctl: Ctl) -> None:
    outcome = await ctl("bench", "1 + 1", *FAST)
    assert outcome.code == 0, outcome.err
    audit = (roost_server.server.config.data_dir / "audit.log").read_text()
    assert "bench" in audit
