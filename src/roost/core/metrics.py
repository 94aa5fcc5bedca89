"""Prometheus metrics of a node: sessions and connections, and every gate and partition.

Off by default. With ``metrics.listen = "HOST:PORT"`` the node serves the Prometheus text
format at ``http://HOST:PORT/metrics`` through prometheus-client's own HTTP server, which runs
in a thread of its own. That thread must not read the node's structures while the event loop
changes them, so a scrape asks the loop for a snapshot (``call_soon_threadsafe``) and waits
for it, up to ``SNAPSHOT_TIMEOUT``; a loop too busy to answer in time gets the previous
snapshot served rather than a hung scrape. A snapshot is two small reads (the node's counters,
one row per gate partition), taken once per scrape.

The metrics (one ``partition`` label per gate partition, see :mod:`roost.gate`):

* ``roost_sessions``, ``roost_users``, ``roost_connections``, ``roost_uptime_seconds``;
* ``roost_gate_state{gate, partition, state}``: 1 for the partition's state, 0 for the others;
* ``roost_gate_calls_total``, ``..._failures_total``, ``..._slow_calls_total``,
  ``..._rejected_total``, ``..._trips_total`` (counters);
* ``roost_gate_failure_rate``, ``roost_gate_slow_rate`` over the sliding window, and
  ``roost_gate_in_flight``.

Bind it to loopback or a monitoring network: like every listener of roost it is not opened to
the world unless configured so, and it carries no authentication of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from roost.core.server import Server

log = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT: Final = 2.0
STATES: Final = ("closed", "open", "half-open")
_COUNTERS: Final = (
    ("calls", "calls", "calls through the gate"),
    ("failures", "failures", "calls that failed (errors and timeouts)"),
    ("slow_calls", "slow", "calls slower than the slow-call threshold"),
    ("rejected", "rejected", "calls refused without reaching the dependency"),
    ("trips", "trips", "times the partition opened"),
)
_GAUGES: Final = (
    ("failure_rate", "failure_rate", "share of failed calls in the sliding window"),
    ("slow_rate", "slow_rate", "share of slow calls in the sliding window"),
    ("in_flight", "in_flight", "calls in progress"),
)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0 picks a free one). Raises ValueError."""
    host, colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics.listen: expected HOST:PORT, got {text!r}")
    return host, int(port)


Snapshot = tuple[dict[str, Any], list[dict[str, Any]]]  # (node statistics, gate rows)


class _Snapshot(Collector):
    """Turns a fresh snapshot into metric families at each scrape (in the HTTP thread)."""

    def __init__(self, take: Callable[[], Snapshot], loop: asyncio.AbstractEventLoop) -> None:
        self._take = take
        self._loop = loop
        self._last: Snapshot = ({}, [])

    def _fresh(self) -> Snapshot:
        future: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def take() -> None:
            try:
                future.set_result(self._take())
            except Exception as exc:  # reported to the scrape's thread
                future.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(take)
            self._last = future.result(timeout=SNAPSHOT_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("metrics: the event loop did not answer; serving the last snapshot")
        return self._last

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node, gates = self._fresh()
        for name, key, help_text in (
            ("roost_sessions", "sessions", "client sessions on this node"),
            ("roost_users", "users", "users with a session on this node"),
            ("roost_connections", "connections", "client connections on this node"),
            ("roost_uptime_seconds", "uptime", "seconds since the node started"),
        ):
            yield GaugeMetricFamily(name, help_text, value=float(node.get(key, 0)))
        labels = ["gate", "partition"]
        state = GaugeMetricFamily(
            "roost_gate_state", "1 for the partition's current state", labels=[*labels, "state"]
        )
        for row in gates:
            for name in STATES:
                state.add_metric([row["gate"], row["partition"], name], row["state"] == name)
        yield state
        for name, key, help_text in _COUNTERS:
            counter = CounterMetricFamily(f"roost_gate_{name}", help_text, labels=labels)
            for row in gates:
                counter.add_metric([row["gate"], row["partition"]], float(row.get(key, 0)))
            yield counter
        for name, key, help_text in _GAUGES:
            gauge = GaugeMetricFamily(f"roost_gate_{name}", help_text, labels=labels)
            for row in gates:
                gauge.add_metric([row["gate"], row["partition"]], float(row.get(key, 0)))
            yield gauge


class MetricsEndpoint:
    """The ``/metrics`` listener of one node; see the module docstring."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._httpd: WSGIServer | None = None
        self.port = 0

    def start(self, listen: str) -> None:
        """Listen (in a thread of prometheus-client's). Call from the node's event loop."""
        host, port = parse_listen(listen)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(self._take, asyncio.get_running_loop()))
        httpd, _thread = start_http_server(port, addr=host, registry=registry)
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def _take(self) -> Snapshot:
        return self._server.statistics(), self._server.gates.statistics()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
