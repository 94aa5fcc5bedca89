"""Running a load: registration, ramp-up, the scenario, the drain, and the result.

The phases, each timed and with the generator's CPU share measured (see
:mod:`roost.bench.load.stats`)::

    register (with register=True) → login → setup → run → drain → close

* **register** and **login** ramp up with at most ``connect_concurrency`` clients connecting
  at once: a fixed number of workers take the next user as soon as their previous one is done,
  so the server sees a steady stream of logins rather than one burst. If the first
  ``min(clients, connect_concurrency)`` attempts all fail and none succeeded, the ramp stops:
  ten thousand "connection refused" say no more than a hundred do.
* The scenario runs only if every client logged in: a run with fewer clients than asked would
  measure something else. What failed is reported instead, by phase and reason.
* **setup** is the scenario's preparation (initial presence; subscriptions for presence).
  **run** lasts ``duration`` seconds, less if ``max_messages`` are sent, every client
  disconnects or :meth:`LoadRun.stop` is called. **drain** waits up to ``drain`` seconds for
  what is still in flight. **close** ends every stream with ``</stream:stream>``.

Whatever happens, a :class:`LoadResult` comes back with what was measured up to then.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable

from roost.bench.load.client import Client
from roost.bench.load.config import LoadConfig, User
from roost.bench.load.presence import Presence
from roost.bench.load.result import LoadResult
from roost.bench.load.scenarios import Chat, Idle, Scenario
from roost.bench.load.shared import Handler, LoginError, Outbox, Settings, describe
from roost.bench.load.stats import (
    CPU_WARNING,
    Counts,
    CpuSample,
    cpu_sample,
    cpu_share,
    read_rss,
    rss_report,
)
from roost.bench.load.tls import make_context

CLOSE_TIMEOUT = 5.0  # seconds to wait for the server to close the streams we end
SCENARIOS: dict[str, type[Scenario]] = {"idle": Idle, "chat": Chat, "presence": Presence}


async def run_load(config: LoadConfig) -> LoadResult:
    """Run the load described by ``config`` in the running event loop (see the module doc).

    Raises ValueError for a configuration that cannot run; every other problem (an
    unreachable server, refused logins, a server going away) is reported in the result.
    """
    return await LoadRun(config).run()


class LoadRun:
    """One run; :meth:`stop` (say, from a SIGINT handler) ends it early, with results."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config.check()
        self.counts = Counts()
        self.scenario: Scenario = SCENARIOS[config.scenario](config, self.counts)
        self.clients: list[Client] = []
        self.phase = "start"
        self._users = config.user_list()
        self._address: tuple[str, int] = (config.host, config.port)
        self._stopping = False
        self._phase_started: CpuSample | None = None
        self._cpu: dict[str, float] = {}
        self._attempted = 0
        self._succeeded = 0
        self._registered: dict[str, int] = {"created": 0, "existing": 0}
        self._rss: dict[str, int | None] = {}
        self._skipped: list[str] = []
        self._troubled: str | None = None
        self.result = LoadResult(
            scenario=config.scenario,
            target=_target(config.host, config.port),
            transport=config.transport,
            parameters=config.parameters(),
        )
        self._ssl_context: ssl.SSLContext | None = None
        if config.starttls or config.direct_tls:
            try:
                self._ssl_context = make_context(config.verify, config.cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cafile {config.cafile}: {exc}") from None

    def stop(self) -> None:
        """Stop early: no more logins or sends; what is in flight is still drained."""
        self._stopping = True
        self.result.interrupted = True
        self.scenario.stopped.set()

    async def run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        config = self.config
        started = cpu_sample()
        note = _raise_fd_limit(len(self._users) + 64)
        if note:
            self.result.notes.append(note)
        progress = asyncio.ensure_future(self._progress()) if config.progress is not None else None
        try:
            await self._phases(loop)
        finally:
            if progress is not None:
                progress.cancel()
            self._begin("close")
            await self._close_all()
            self._end()
        self.result.durations["total"] = round(cpu_sample().wall - started.wall, 3)
        self._cpu["total"] = cpu_share(started, cpu_sample())["share"]
        return self._finish()

    async def _phases(self, loop: asyncio.AbstractEventLoop) -> None:
        config = self.config
        try:
            info = await loop.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.counts.fail("connect", f"cannot resolve {config.host}: {exc}")
            return
        self._address = str(info[0][4][0]), config.port
        settings = Settings(
            domain=config.domain,
            outbox=Outbox(loop),
            starttls=config.starttls,
            direct_tls=config.direct_tls,
            ssl_context=self._ssl_context,
            server_hostname=config.domain if config.verify else None,
            mechanism=config.mechanism,
            resource=config.resource,
            stream_management=config.stream_management,
        )
        if config.register:
            self._begin("register")
            await self._ramp(lambda i, user: self._register_one(i, user, settings))
            self._end()
            if self.counts.failed() or self._stopping:
                return
        pid = config.server_pid
        self._rss["before"] = read_rss(pid) if pid is not None else None
        self._begin("login")
        await self._ramp(lambda i, user: self._login_one(i, user, settings))
        self._end()
        self._rss["after_login"] = read_rss(pid) if pid is not None else None
        if self.counts.failed() or self._stopping or not self.clients:
            return
        scenario = self.scenario
        scenario.start(self.clients)
        self._begin("setup")
        await scenario.prepare(self.clients)
        self._end()
        if self.counts.failed() or self._stopping:
            return
        self._begin("run")
        try:
            await scenario.run()
        finally:
            self._end()
            self._rss["end"] = read_rss(pid) if pid is not None else None
        self._begin("drain")
        await scenario.drain()
        self._end()

    # -- ramp-up --------------------------------------------------------------------------

    async def _ramp(self, job: Callable[[int, User], Awaitable[None]]) -> None:
        users = iter(enumerate(self._users))
        self._attempted = self._succeeded = 0
        first = min(len(self._users), self.config.connect_concurrency)

        async def worker() -> None:
            for index, user in users:
                if self._stopping or (self._succeeded == 0 and self._attempted >= first):
                    return
                self._attempted += 1
                await job(index, user)

        await asyncio.gather(*(worker() for _ in range(first)))
        skipped = len(self._users) - self._attempted
        if skipped:
            why = "interrupted" if self._stopping else f"the first {first} attempts all failed"
            self._skipped.append(f"{self.phase}: {skipped} clients not attempted ({why})")

    async def _register_one(self, index: int, user: User, settings: Settings) -> None:
        client = Client(index, user, settings, Handler(), register=True)
        outcome = await self._connect(client)
        if outcome is not None:
            self._succeeded += 1
            self._registered["created" if outcome == "created" else "existing"] += 1
        await asyncio.wait([client.closed], timeout=CLOSE_TIMEOUT)
        client.abort()

    async def _login_one(self, index: int, user: User, settings: Settings) -> None:
        client = Client(index, user, settings, self.scenario)
        if await self._connect(client) is not None:
            self._succeeded += 1
            self.clients.append(client)

    async def _connect(self, client: Client) -> str | None:
        """Connect and wait for login (or registration); record a failure. None if failed."""
        loop = asyncio.get_running_loop()
        timeout = self.config.login_timeout
        deadline = loop.time() + timeout
        host, port = self._address
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: client, host, port)
        except (TimeoutError, OSError) as exc:
            why = describe(exc) if isinstance(exc, OSError) else f"timed out after {timeout:g} s"
            self.counts.fail("connect", why)
            client.closed.set_result(None)  # never open, so nothing to wait for
            return None
        await asyncio.wait([client.done], timeout=max(deadline - loop.time(), 0))
        if not client.done.done():
            client.fail(f"timed out after {timeout:g} s")
        error = client.done.exception()
        if error is not None:
            reason = error.reason if isinstance(error, LoginError) else str(error)
            phase = error.phase if isinstance(error, LoginError) else "stream"
            self.counts.fail(phase, reason)
            return None
        return client.done.result()

    async def _close_all(self) -> None:
        clients = [c for c in self.clients if not c.closed.done()]
        for client in clients:
            client.close()
        if clients:
            await asyncio.wait([c.closed for c in clients], timeout=CLOSE_TIMEOUT)
        for client in clients:
            if not client.closed.done():
                client.abort()

    # -- phases, progress and the result --------------------------------------------------

    def _begin(self, phase: str) -> None:
        self.phase = phase
        self._phase_started = cpu_sample()

    def _end(self) -> None:
        if self._phase_started is None:
            return
        share = cpu_share(self._phase_started, cpu_sample())
        self.result.durations[self.phase] = share["wall_s"]
        self._cpu[self.phase] = share["share"]
        self._phase_started = None
        if self._troubled is None and (self.counts.errors or self.counts.disconnects):
            self._troubled = self.phase  # where the first error or disconnect happened

    async def _progress(self) -> None:
        report = self.config.progress
        assert report is not None
        last = cpu_sample()
        delivered = 0
        while True:
            await asyncio.sleep(1.0)
            now = cpu_sample()
            share = cpu_share(last, now)["share"]
            rate = (self.counts.delivered - delivered) / max(now.wall - last.wall, 1e-9)
            last, delivered = now, self.counts.delivered
            report(self._progress_line(share, rate))

    def _progress_line(self, share: float, rate: float) -> str:
        phase = self.phase
        total = len(self._users)
        failed = self.counts.failed()
        if phase in ("register", "login"):
            done = self._succeeded
            what = f"{done}/{total} {'registered' if phase == 'register' else 'online'}"
            detail = f"{what}, {failed} failed"
        else:
            detail = self.scenario.progress()
            if phase in ("run", "drain") and self.scenario.name != "idle":
                p99 = self.scenario.latency.percentile_us(99) / 1000
                detail += f" ({rate:,.0f}/s, p99 {p99:.2f} ms)"
            if self.counts.errors:
                detail += f", {sum(self.counts.errors.values())} errors"
        return f"[{self.phase:>8}] {detail} | generator CPU {share:.0%}"

    def _finish(self) -> LoadResult:
        result = self.result
        counts = self.counts
        config = self.config
        online = len(self.clients)
        login_s = result.durations.get("login", 0.0)
        result.clients = {
            "requested": len(self._users),
            "online": online,
            "failed": counts.failed() - counts.failed("subscribe"),
            "login_per_s": round(online / login_s, 1) if login_s > 0 else 0.0,
            "disconnected": counts.disconnects,
        }
        if config.register:
            result.clients["registered"] = dict(self._registered)
        result.failures = {phase: dict(reasons) for phase, reasons in counts.failures.items()}
        result.errors = dict(counts.errors)
        scenario = self.scenario
        result.traffic = scenario.summary() if result.durations.get("run") is not None else {}
        result.latency = scenario.latency.summary()
        result.generator = {"cpu_share": dict(self._cpu), "rss_bytes": read_rss("self")}
        if config.server_pid is not None:
            result.server = {
                "pid": config.server_pid,
                "rss": rss_report(
                    self._rss.get("before"),
                    self._rss.get("after_login"),
                    self._rss.get("end"),
                    online,
                ),
            }
        result.warnings.extend(scenario.warnings)
        self._judge(result)
        return result

    def _judge(self, result: LoadResult) -> None:
        """Turn counts into ``ok``, ``failed_phase``, ``problems`` and ``warnings``."""
        counts = self.counts
        total = len(self._users)
        problems: list[str] = []
        for phase, reasons in counts.failures.items():
            failed = sum(reasons.values())
            listed = "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common(5))
            if phase == "subscribe":
                problems.append(f"subscribe: {listed}")
            else:
                problems.append(f"{phase}: {failed} of {total} clients failed: {listed}")
        problems.extend(self._skipped)
        if counts.failures and not result.durations.get("run"):
            problems.append("the scenario was not run")
        traffic = result.traffic
        where = self._troubled or "run"
        if counts.disconnects:
            why = [r for r in counts.errors if r.startswith("disconnected")]
            sample = "; ".join(f"{r.split(': ', 1)[1]} ({counts.errors[r]})" for r in why[:3])
            problems.append(f"{where}: {counts.disconnects} clients disconnected: {sample}")
        other = {r: n for r, n in counts.errors.items() if not r.startswith("disconnected")}
        if other:
            listed = "; ".join(f"{r} ({n})" for r, n in sorted(other.items(), key=lambda x: -x[1]))
            problems.append(f"{where}: {sum(other.values())} errors: {listed}")
        if traffic.get("lost"):
            problems.append(
                f"run: {traffic['lost']} deliveries lost (sent but not received by the end "
                "of the run and drain)"
            )
        if traffic.get("duplicates"):
            problems.append(f"run: {traffic['duplicates']} duplicate deliveries")
        if result.interrupted:
            problems.append("interrupted")
        result.problems[:0] = problems
        result.ok = not result.problems
        if counts.failures:
            result.failed_phase = next(iter(counts.failures))
        elif result.problems:
            result.failed_phase = where
        for phase in ("login", "run"):
            share = self._cpu.get(phase, 0.0)
            # Over a phase shorter than a second the share says little (start-up costs).
            if share > CPU_WARNING and result.durations.get(phase, 0.0) >= 1.0:
                result.warnings.append(
                    f"the generator used {share:.0%} of a core during {phase}: it may be the "
                    "bottleneck; use fewer clients per generator process"
                )
        pacer = traffic.get("pacer")
        if pacer and pacer["fell_behind"]:
            result.warnings.append(
                f"the pacer fell behind: {pacer['achieved_rate']}/s of {pacer['target_rate']}/s, "
                f"up to {pacer['max_lag_ms']} ms late"
            )
        if traffic.get("extra"):
            result.warnings.append(
                f"{traffic['extra']} presence notifications went to clients outside the rosters "
                "this run set up (subscriptions left by an earlier run?): the server did more "
                "fan-out than measured; use a fresh --user-prefix"
            )
        if traffic.get("stale"):
            result.warnings.append(
                f"{traffic['stale']} messages from an earlier run were delivered (not counted)"
            )


def _raise_fd_limit(needed: int) -> str | None:
    """Raise the soft open-file limit towards the hard one if ``needed`` exceeds it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    new = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if new <= soft:
        return f"the open-file limit ({soft}) is below the {needed} needed; raise the hard limit"
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    note = f"raised the open-file limit from {soft} to {new}"
    return note if new >= needed else note + f" (the hard limit; {needed} were needed)"


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
