"""The Prometheus endpoint: off by default; with metrics.listen, the node and its gates."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from roost.core.metrics import parse_listen
from roost.testing import RunningServer


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_there_is_no_metrics_endpoint_by_default(roost_server: RunningServer) -> None:
    assert roost_server.server.metrics is None


@pytest.mark.roost_config(metrics_listen="127.0.0.1:0")
async def test_metrics_show_sessions_and_every_gate_partition(roost_server: RunningServer) -> None:
    endpoint = roost_server.server.metrics
    assert endpoint is not None
    await roost_server.create_user("alice")
    partition = roost_server.server.gates.statistics()[0]["partition"]
    labels = (("gate", "storage"), ("partition", partition))
    # The scrape runs in a thread and asks this loop for a snapshot: the loop must stay free.
    before = await asyncio.to_thread(scrape, endpoint.port)
    assert before[("roost_sessions", ())] == 0
    assert before[("roost_gate_state", (*labels, ("state", "closed")))] == 1
    assert before[("roost_gate_state", (*labels, ("state", "open")))] == 0
    calls = before[("roost_gate_calls_total", labels)]
    assert calls >= 1  # creating alice went through the storage gate
    await roost_server.server.storage.user_exists("alice@localhost")
    after = await asyncio.to_thread(scrape, endpoint.port)
    assert after[("roost_gate_calls_total", labels)] == calls + 1  # fresh at every scrape


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9100", "localhost:", ":9100", "host:99999"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)
