"""benchmarks.compare's pure parts: ratios, the table and its footnotes, the configuration
writers, argument parsing. Nothing here installs or starts a server."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from benchmarks.compare import QUICK, Bench, parse
from benchmarks.compare_peer import Peer
from benchmarks.compare_pyjabber import PyJabber, pyjabber_launcher
from benchmarks.compare_report import (
    HIGHER,
    LOWER,
    NEITHER,
    Column,
    Row,
    comparisons,
    median,
    one_line,
    ratio,
    report,
    table,
)
from benchmarks.compare_servers import (
    ROOST_MODULES,
    ROOST_OFF,
    Ejabberd,
    Prosody,
    Roost,
    ejabberd_config,
    prosody_config,
    roost_config,
)

from roost.config import DEFAULT_MODULES
from roost.config.pipeline import check_file


def _column(peer: Peer, **values: list[float]) -> Column:
    return Column(peer, version="v1", values=dict(values))


def test_ratio() -> None:
    higher = Row("closed_per_s", "delivered/s", HIGHER, 0)
    lower = Row("closed_cpu", "cpu", LOWER, 3)
    assert ratio(higher, 30_000.0, 10_000.0) == "3.00x"
    assert ratio(lower, 0.02, 0.08) == "0.25x"
    assert ratio(higher, None, 1.0) == "-"
    assert ratio(higher, 1.0, 0.0) == "-"
    assert ratio(higher, math.nan, 1.0) == "-"
    assert ratio(Row("closed_gen", "gen", NEITHER, 0), 50.0, 25.0) == "-"
    assert ratio(Row("lost", "lost", LOWER, 0), 1.0, 2.0) == "-"


def test_median_ignores_failed_values_and_sums_losses() -> None:
    column = _column(Roost(), closed_per_s=[3.0, 1.0, math.nan, 2.0], lost=[1.0, 0.0, 4.0])
    assert median(column, "closed_per_s") == 2.0
    assert median(column, "lost") == 5.0
    assert median(column, "open_p50") is None


def test_table_ratios_against_the_same_transport() -> None:
    roost = _column(Roost(), closed_per_s=[30_000.0], closed_cpu=[0.03], lost=[0.0])
    tls = _column(Roost(tls=True), closed_per_s=[20_000.0], closed_cpu=[0.05], lost=[0.0])
    ejabberd = _column(Ejabberd(), closed_per_s=[10_000.0], closed_cpu=[0.06], lost=[0.0])
    pyjabber = _column(PyJabber(), closed_per_s=[2_000.0], closed_cpu=[0.5], lost=[7.0])
    columns = [roost, tls, ejabberd, pyjabber]
    assert [(a.peer.name, b.peer.name) for _, a, b in comparisons(columns)] == [
        ("roost", "ejabberd"),
        ("roost-tls", "pyjabber"),
    ]
    notes: list[str] = []
    lines = table(QUICK, columns, notes)
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[-2:] == ["roost ÷ ejabberd", "roost (STARTTLS) ÷ PyJabber"]
    assert lines[1] == "|" + "---|" * len(header)
    cells = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines[2:]}
    delivered = [c.strip() for c in cells[next(k for k in cells if k.startswith("1:1 chat"))]]
    assert delivered == [HIGHER, "30,000", "20,000", "10,000", "2,000", "3.00x", "10.00x"]
    cpu = [c.strip() for c in cells["server CPU-seconds per 1,000 messages (closed loop)"]]
    assert cpu[-2:] == ["0.50x", "0.10x"]
    lost = [c.strip() for c in cells["messages + notifications lost, all runs"]]
    assert lost == [LOWER, "0", "0", "0", "7", "-", "-"]
    # Nothing measured for presence: one footnote per server, shared by its rows.
    assert all(len(line.split("|")) == len(header) + 2 for line in lines)
    assert [n for n in notes if n.endswith("not measured")] == [
        f"{c.peer.label}: not measured" for c in columns
    ]


def test_failures_and_tracebacks_become_one_line_footnotes() -> None:
    traceback = (
        "roost exited with status 1 while starting (log: x.log):\n"
        "Traceback (most recent call last):\n"
        '  File "up.py", line 116, in serve\n'
        "    server = Server(config)\n"
        "TypeError: Can't instantiate abstract class SQLiteStorage\n"
    )
    assert one_line(traceback) == (
        "roost exited with status 1 while starting (log: x.log): "
        "TypeError: Can't instantiate abstract class SQLiteStorage"
    )
    mid_traceback = (
        "pyjabber exited with status 1 while starting (log: c.log):\n"
        "    ^^^^^^^^^^\n"
        '  File "server.py", line 134, in run_server\n'
        "    pubsub = PubSub()\n"
        "TypeError: 'NoneType' object is not subscriptable"
    )
    assert one_line(mid_traceback) == (
        "pyjabber exited with status 1 while starting (log: c.log): "
        "TypeError: 'NoneType' object is not subscriptable"
    )
    assert one_line("a\n  b  c") == "a b c"
    assert len(one_line("x" * 1000)) == 400
    broken = Column(Prosody(), failure="not installed: no apt-get")
    partly = _column(Ejabberd(), closed_per_s=[1.0, 3.0])
    partly.errors["closed_per_s"] = ["ejabberd exited during the run"]
    notes: list[str] = []
    lines = table(QUICK, [_column(Roost()), partly, broken], notes)
    assert "failed [" in lines[2]
    assert "Prosody: not installed: no apt-get" in notes
    assert any(
        n.endswith("median of 2 run(s); 1 failed: ejabberd exited during the run") for n in notes
    )
    assert all("\n" not in note for note in notes)


def test_report_lists_setup_commands_and_what_was_turned_off() -> None:
    roost = Roost()
    roost.record(["taskset", "-c", "0", "roost", "up", "--c2s-port", "5999"], PORT="5999")
    columns = [_column(roost, idle_kib=[12.5]), _column(Prosody(), idle_kib=[35.0])]
    text = report(QUICK, columns, ["--quick"], {"idle": "python -m roost.bench.load"}, when="D")
    assert text.startswith("## roost compared (D)\n\n`python -m benchmarks.compare --quick`")
    assert "    taskset -c 0 roost up --c2s-port PORT" in text
    assert "    # idle\n    python -m roost.bench.load" in text
    assert "* roost: idle_kib 12.5" in text
    setup = text.split("### Set-up")[1].split("### Commands")[0]
    assert "turned off: mam, carbons" in setup
    assert "mod_limits (rate limits)" in setup
    assert re.search(r"\| 12\.5 \| 35\.0 \| 0\.36x \|", text)


def test_roost_config_is_valid_and_turns_the_extras_off(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text(roost_config())
    assert check_file(path) == []
    assert set(ROOST_MODULES) | set(ROOST_OFF) == set(DEFAULT_MODULES)
    assert not set(ROOST_MODULES) & set(ROOST_OFF)


def test_ejabberd_config() -> None:
    text = ejabberd_config(15222)
    assert "\t" not in text
    assert "{{" not in text
    assert "    port: 15222\n" in text
    assert "shaper: {}\n" in text
    assert "c2s_shaper: none" in text
    assert "mod_mam" not in text
    assert "mod_stream_mgmt" not in text
    # Well-formed enough for YAML: two-space indentation, "key: value" or "- item" lines.
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert (len(line) - len(line.lstrip())) % 2 == 0, line
        assert re.match(r"^\s*(- ?\S.*|-|[\w_]+:( .+)?)$", line), line


def test_prosody_config(tmp_path: Path) -> None:
    text = prosody_config(tmp_path, 15223)
    assert text.count("{") == text.count("}")
    assert "c2s_ports = { 15223 }" in text
    assert f'data_path = "{tmp_path}/data"' in text
    assert text.rstrip().endswith('VirtualHost "localhost"')
    enabled = re.search(r"modules_enabled = \{(.*)\}", text)
    assert enabled is not None
    assert "limits" not in enabled.group(1)
    assert "mam" not in enabled.group(1)


def test_pyjabber_launcher_is_python() -> None:
    source = pyjabber_launcher()
    compile(source, "launch-pyjabber", "exec")
    assert "pserver.HttpServer = lambda apps: None" in source  # nothing on port 9090
    assert PyJabber().load_args("chat") == ["--tls", "--presence-timeout", "5"]
    assert PyJabber().load_args("presence") == ["--tls", "--presence-timeout", "10"]
    assert Roost().load_args("chat") == []


def test_a_slow_server_is_measured_smaller_and_the_table_says_so(tmp_path: Path) -> None:
    _, _, plan = parse(["--users", "10000"])
    bench = Bench(plan, tmp_path)
    small = bench.plan_for(PyJabber())
    assert (small.users, small.presence_clients, small.clients) == (1000, 100, 1000)
    assert bench.plan_for(Roost()) == plan
    column = _column(PyJabber(), idle_kib=[60.0], closed_per_s=[1.0])
    column.remarks["idle_kib"] = "1,000 sessions, not 10,000: slow logins"
    notes: list[str] = []
    lines = table(plan, [column], notes)
    assert "| 60.0 [1] |" in lines[2]
    assert notes[0] == "PyJabber: 1,000 sessions, not 10,000: slow logins"
    assert "| 1 |" in lines[4]


def test_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    _, names, plan = parse(["--quick"])
    assert names == ["roost", "roost-tls", "ejabberd", "prosody", "pyjabber"]
    assert plan == QUICK
    _, names, plan = parse(["--servers", "roost,prosody", "--runs", "3", "--users", "500"])
    assert names == ["roost", "prosody"]
    assert (plan.runs, plan.users, plan.clients) == (3, 500, 1000)
    for bad in (["--servers", "roost,openfire"], ["--runs", "0"]):
        with pytest.raises(SystemExit) as exited:
            parse(bad)
        assert exited.value.code == 2
    assert "openfire" in capsys.readouterr().err
