"""The benchmark harness's pure parts: statistics, the report format, argument parsing.

No server is started and no figure is asserted: timing belongs in `python -m bench` output,
never in a test. What is pinned here is what makes runs comparable: the rows, their order and
the columns of the printed report, whatever the figures or the failures of a run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

# `bench` lives next to `tests`, outside the installed packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import broker, discovered, ingest, propagation, reference, validation  # noqa: E402
from bench.__main__ import MONGODB_SKIPPED, parse  # noqa: E402
from bench.client import Answer, BacklogUnknown, derivation_backlog  # noqa: E402
from bench.report import (  # noqa: E402
    BROKER,
    DISCOVERED,
    FORMAT_VERSION,
    INGEST,
    MEMORY,
    PROPAGATION,
    QUERY,
    REFERENCE,
    SECTIONS,
    VALIDATION,
    Column,
    cell,
    header_line,
    render,
    section_json,
    section_lines,
)
from bench.server import (  # noqa: E402
    BenchError,
    CpuReading,
    Server,
    cpu_seconds,
    cpu_ticks,
    derivation_in_effect,
    parent_pid,
    processes_note,
    status_bytes,
    vm_hwm_bytes,
)
from bench.stats import PhaseResult, Recorder, percentile  # noqa: E402
from bench.suite import BackendRun, Options, notes, sections  # noqa: E402
from bench.validation import StepResult, ValidationOutcome  # noqa: E402

NO_MONGODB: dict[str, str] = {}
WITH_MONGODB = {"LRS_MONGODB_URL": "mongodb://db.invalid:27017"}


# --- statistics ----------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 .. 100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    # Nearest rank: always a value that occurred, never an interpolation.
    assert percentile([1.0, 2.0], 0.5) == 1.0
    assert percentile([1.0, 10.0, 100.0], 0.99) == 100.0
    assert percentile([7.0], 0.01) == 7.0
    assert percentile([], 0.5) == 0.0


def test_recorder_counts_statements_or_requests_by_unit() -> None:
    recorder = Recorder()
    for seconds, items in [(0.010, 100), (0.020, 100), (0.030, 100), (0.040, 50)]:
        recorder.add(seconds, items)
    posts = recorder.result("post-batch-100", "statements/s", elapsed=2.0)
    assert (posts.requests, posts.statements, posts.rate) == (4, 350, 175.0)
    assert (posts.p50_ms, posts.p99_ms, posts.max_ms) == (20.0, 40.0, 40.0)
    gets = recorder.result("get-all", "requests/s", elapsed=2.0)
    assert (gets.requests, gets.statements, gets.rate) == (4, 350, 2.0)
    assert Recorder().result("get-all", "requests/s", elapsed=0.0).rate == 0.0


def test_vm_hwm_is_read_in_bytes() -> None:
    status = "Name:\tlrs\nVmPeak:\t  900000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\n"
    assert vm_hwm_bytes(status) == 123456 * 1024
    assert vm_hwm_bytes("Name:\tkthreadd\n") is None
    assert status_bytes(status, "VmRSS") == 100000 * 1024


def test_parent_pid_is_read_after_the_command_name() -> None:
    # The command name is in parentheses and may itself hold spaces and parentheses.
    assert parent_pid("4242 (lrs) S 4200 4242 4242 0 -1") == 4200
    assert parent_pid("77 (a (b) c) R 1 77 77 0 -1") == 1


def test_cpu_time_is_user_plus_system_ticks_after_the_command_name() -> None:
    # Fields after the name: state, ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt,
    # majflt, cmajflt, utime (12th), stime (13th), then the children's times (not counted).
    stat = "77 (a (b) c) R 1 77 77 0 -1 4194304 100 0 0 0 250 40 7 9 20 0 3"
    assert cpu_ticks(stat) == 290


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_cpu_seconds_of_a_live_process_grow_with_its_work() -> None:
    before = cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # spends 0.3 s of CPU
        pass
    after = cpu_seconds(os.getpid())
    assert after is not None and after - before >= 0.2


def test_cpu_per_statement_is_the_difference_of_two_readings() -> None:
    note = CpuReading(10.0, 2.0).per_statement(CpuReading(12.5, 2.5), 1000)
    assert note == ("server 2.500 ms, client 0.500 ms (2.5 s and 0.5 s of CPU for 1000 statements)")
    # A process that went away (a restarted derivation process) leaves the server unknown.
    assert (
        CpuReading(10.0, 2.0)
        .per_statement(CpuReading(None, 2.5), 1000)
        .startswith("server unknown, client 0.500 ms")
    )
    assert (
        CpuReading(10.0, 2.0).per_statement(CpuReading(4.0, 2.5), 1000).startswith("server unknown")
    )
    assert CpuReading(10.0, 2.0).per_statement(CpuReading(11.0, 2.5), 0) == "no statements"


def test_reference_notes_give_the_bare_apps_cpu_per_row() -> None:
    outcome = reference.ReferenceOutcome(acknowledged=2)
    outcome.cpu["bare-single"] = "server 1.000 ms, client 0.300 ms (1.0 s and 0.3 s of CPU)"
    assert (
        "cpu_per_statement_bare-single=server 1.000 ms, client 0.300 ms (1.0 s and 0.3 s of CPU)"
        in outcome.notes()
    )


# --- the server's processes ----------------------------------------------------------------


def test_derivation_in_effect_is_what_lrs_serve_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = {"LRS_STORAGE": "embedded"}
    for asked in ("inprocess", "process", "celery"):
        assert derivation_in_effect(embedded | {"LRS_DERIVATION": asked}) == asked
    # auto: a derivation process on the embedded store of a machine with 2 cores or more,
    # not with Redis nor on MongoDB, nor on one core (lrs.server.serving_settings).
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert derivation_in_effect(embedded) == "process"
    assert derivation_in_effect(embedded | {"LRS_DERIVATION": "auto"}) == "process"
    assert derivation_in_effect(embedded | {"LRS_REDIS_URL": "redis://r.invalid"}) == "celery"
    mongodb = {"LRS_STORAGE": "mongodb", "LRS_MONGODB_URL": "mongodb://db.invalid"}
    assert derivation_in_effect(mongodb) == "inprocess"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert derivation_in_effect(embedded) == "inprocess"
    # Only the server's environment counts, never the bench's own.
    monkeypatch.setenv("LRS_DERIVATION", "process")
    assert derivation_in_effect(embedded) == "inprocess"
    with pytest.raises(BenchError):
        derivation_in_effect({"LRS_STORAGE": "memory", "LRS_DERIVATION": "process"})


def test_processes_note_says_who_derived_and_when_rss_is_a_sum() -> None:
    assert processes_note(1, "inprocess", "api-ingest peak RSS") == (
        "derivation=inprocess api_processes=1"
    )
    assert processes_note(1, "process", "api-process peak RSS") == (
        "derivation=process api_processes=1 derivation_processes=1 "
        "(api-process peak RSS: sum over them, VmHWM each)"
    )
    assert processes_note(3, "inprocess", "rss", "VmRSS, VmHWM") == (
        "derivation=inprocess api_processes=3 (rss: sum over them, VmRSS, VmHWM each)"
    )


# A stand-in for `lrs serve`: forks `sys.argv[1]` children that sleep (its supervisor's shape),
# or none; then sleeps itself. Killed with its process group at the end of the test.
_FORKER = """
import os, sys, time
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
time.sleep(60)
"""


# forker(children, workers=1, derivation="inprocess"): a Server around a new stand-in.
Forker = Callable[..., Server]


@pytest.fixture
def forker(tmp_path: Path) -> Iterator[Forker]:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    started: list[subprocess.Popen[bytes]] = []

    def start(children: int, workers: int = 1, derivation: str = "inprocess") -> Server:
        process = subprocess.Popen(
            [sys.executable, "-c", _FORKER, str(children)], start_new_session=True
        )
        started.append(process)
        return Server(
            backend="embedded",
            port=1,
            workdir=tmp_path,
            process=process,
            key="k",
            secret="s",
            database="d",
            workers=workers,
            derivation=derivation,
        )

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGKILL)  # the stand-in and its children only
        process.wait()


def _children(server: Server, count: int) -> list[int]:
    deadline = time.monotonic() + 30  # a bound, not a timing: the forks are quick
    while len(pids := server.api_pids()) < count or server.process.pid in pids:
        assert time.monotonic() < deadline, f"{count} children never appeared"
        time.sleep(0.02)
    return pids


def test_the_processes_measured_are_the_supervisors_children_if_any(forker: Forker) -> None:
    alone = forker(0)
    assert alone.api_pids() == [alone.process.pid] and alone.processes == 1
    # One API process and the derivation process (LRS_DERIVATION=process, or auto resolved).
    beside = forker(2, workers=1, derivation="process")
    assert beside.processes == 2
    pids = _children(beside, 2)
    assert len(pids) == 2 and all(p != beside.process.pid for p in pids)
    assert beside.peak_rss_bytes() is not None and beside.rss_bytes() is not None
    assert forker(3, workers=2, derivation="process").processes == 3
    assert forker(0, derivation="celery").processes == 1


def test_ready_waits_for_every_api_process_and_the_derivation_process(
    forker: Forker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # /xapi/about answers at once: readiness then hangs on the processes alone.
    monkeypatch.setattr(httpx, "get", lambda url, timeout: httpx.Response(200))
    beside = forker(2, workers=1, derivation="process")
    beside._wait_ready(30.0)
    assert len(beside.api_pids()) == 2
    forker(0)._wait_ready(30.0)
    # A supervisor short of its derivation process is not ready.
    short = forker(1, workers=1, derivation="process")
    _children(short, 1)
    with pytest.raises(BenchError, match="2 processes"):
        short._wait_ready(0.3)


# --- report formatting ---------------------------------------------------------------------


def test_cells_have_fixed_width_and_a_marker_for_missing_values() -> None:
    column = Column("p50_ms", "p50_ms", 10, 1)
    assert cell(column, 12.345) == "      12.3"
    assert cell(column, 7) == "         7"
    assert cell(column, None) == "         -"
    assert all(len(cell(column, v)) == 10 for v in (0.0, 99999.9, None, 3))


def _phase(name: str, unit: str, requests: int, statements: int, ms: float) -> PhaseResult:
    return PhaseResult(name, unit, requests, statements, 1.5, requests / 1.5, ms, 2 * ms, 3 * ms)


def test_a_section_has_one_line_per_row_in_order_and_aligned_columns() -> None:
    rows = [
        ("embedded", "post-batch-100", _phase("post-batch-100", "statements/s", 9, 900, 8.0)),
        ("embedded", "post-single", None),
        ("mongodb", "post-batch-100", _phase("post-batch-100", "statements/s", 9, 900, 1.25)),
    ]
    lines = section_lines(INGEST, [(b, n, None if p is None else p.as_dict()) for b, n, p in rows])
    assert len(lines) == 4
    assert lines[0].split() == [
        "[ingest]",
        "backend",
        "phase",
        "requests",
        "statements",
        "seconds",
        "statements/s",
        "p50_ms",
        "p99_ms",
        "max_ms",
    ]
    assert [line.split()[1:3] for line in lines[1:]] == [
        ["embedded", "post-batch-100"],
        ["embedded", "post-single"],
        ["mongodb", "post-batch-100"],
    ]
    # Every line is as long as the header: values never shift the columns.
    assert {len(line) for line in lines} == {len(lines[0])}
    assert lines[2].split()[3:] == ["-"] * len(INGEST.columns)
    assert lines[1].split()[3:] == ["9", "900", "1.50", "6.0", "8.0", "16.0", "24.0"]


def test_column_headers_carry_units_and_are_unique_per_section() -> None:
    for section in SECTIONS:
        headers = [c.header for c in section.columns]
        assert len(headers) == len(set(headers)), section.name
    units = ("_ms", "/s", "_s", "seconds", "MiB", "requests", "statements", "acked", "visible")
    for section in SECTIONS:
        for column in section.columns:
            assert any(u in column.header for u in units) or column.header.endswith("/req"), (
                column.header
            )


def test_header_line_keeps_the_given_key_order_and_has_no_spaces_in_values() -> None:
    line = header_line({"format": 1, "date": "2026-01-01T00:00:00Z", "platform": "Linux 6"})
    assert line == "lrs-bench format=1 date=2026-01-01T00:00:00Z platform=Linux_6"


def test_section_json_uses_the_table_headers() -> None:
    rows = [("embedded", "api-ingest", {"peak_rss_mib": 120.5}), ("embedded", "api-celery", None)]
    assert section_json(MEMORY, rows) == {
        "embedded": {"api-ingest": {"peak_rss_MiB": 120.5}, "api-celery": None}
    }


def test_the_new_sections_columns_are_pinned() -> None:
    assert FORMAT_VERSION == 7
    assert [s.name for s in SECTIONS] == [
        "ingest",
        "query",
        "propagation",
        "memory",
        "validation",
        "discovered",
        "broker",
        "reference",
    ]
    assert section_lines(REFERENCE, [])[0].split()[1:] == [
        "backend",
        "phase",
        *section_lines(INGEST, [])[0].split()[3:],
    ]
    assert section_lines(BROKER, [])[0].split()[1:] == [
        "backend",
        "redis",
        *section_lines(INGEST, [])[0].split()[3:],
    ]
    assert section_lines(VALIDATION, [])[0].split() == [
        "[validation]",
        "backend",
        "step",
        "statements",
        "seconds",
        "us/statement",
    ]
    assert section_lines(DISCOVERED, [])[0].split() == [
        "[discovered]",
        "backend",
        "scenario",
        "statements",
        "post_seconds",
        "statements/s",
        "post_p50_ms",
        "post_p99_ms",
        "drain_s",
        "rss_start_MiB",
        "rss_after_post_MiB",
        "rss_end_MiB",
        "peak_rss_MiB",
    ]


def test_outcomes_fill_every_column_of_their_rows() -> None:
    values = _discovered_outcome("embedded").values()
    assert values is not None and {c.key for c in DISCOVERED.columns} <= set(values)
    assert discovered.DiscoveredOutcome("embedded").values() is None
    step = StepResult("json-decode", 20_000, 0.5)
    assert {c.key for c in VALIDATION.columns} <= set(step.values())
    assert step.us_per_statement == pytest.approx(25.0)
    line = section_lines(VALIDATION, [("local", "json-decode", step.values())])[1]
    assert line.split()[3:] == ["20000", "0.500", "25.00"]


# --- suite rows: fixed whatever ran --------------------------------------------------------


def _options(*argv: str, environ: dict[str, str] | None = None) -> Options:
    return parse(list(argv), NO_MONGODB if environ is None else environ)


def _row_names(text: str, tag: str) -> list[tuple[str, str]]:
    return [
        (line.split()[1], line.split()[2])
        for line in text.splitlines()
        if line.startswith(tag) and line.split()[1] != "backend"
    ]


def _report(
    runs: list[BackendRun],
    options: Options,
    checked: ValidationOutcome | None = None,
    bare: reference.ReferenceOutcome | None = None,
) -> str:
    info = {"format": FORMAT_VERSION, "statements": options.ingest.statements}
    return render(
        info,
        options.skipped,
        sections(runs, options, checked, bare),
        notes(runs, options, checked, bare),
    )


def _measured(report: str, tag: str) -> list[bool]:
    """Per row of the section, whether it holds figures (not `-`)."""
    lines = [x for x in report.splitlines() if x.startswith(tag + "  ")][1:]
    return [line.split()[3] != "-" for line in lines]


def _broker_outcome(row: str, stored: int = 1000) -> broker.BrokerOutcome:
    outcome = broker.BrokerOutcome(row, acknowledged=1000, stored=stored)
    outcome.phase = _phase(row, "statements/s", 1000, 1000, 2.0)
    return outcome


def test_a_broker_row_says_whether_every_acknowledged_statement_was_stored() -> None:
    assert "store_check=ok" in _broker_outcome("celery-redis-down").notes()
    assert "store_check=MISSING" in _broker_outcome("celery-redis-down", stored=999).notes()
    values = _broker_outcome("celery-redis-up").values()
    assert values is not None and {c.key for c in BROKER.columns} <= set(values)
    assert broker.BrokerOutcome("celery-redis-up").values() is None
    assert broker.BrokerOutcome("celery-redis-up", skipped="no").notes() == ["skipped=no"]


def test_the_broker_down_url_names_a_port_nothing_listens_on() -> None:
    url = broker.down_url()
    assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def _discovered_outcome(backend: str) -> discovered.DiscoveredOutcome:
    outcome = discovered.DiscoveredOutcome(backend, acknowledged=2000, drain_s=1.5, drain="ok")
    outcome.post = _phase(discovered.ROW, "statements/s", 4, 2000, 900.0)
    outcome.rss_start = outcome.rss_after_post = outcome.rss_end = 90 * 2**20
    outcome.peak_rss = 100 * 2**20
    return outcome


_ALL_TAGS = (
    "[ingest]",
    "[query]",
    "[propagation]",
    "[memory]",
    "[validation]",
    "[discovered]",
    "[broker]",
    "[reference]",
)


def test_rows_are_the_same_for_a_complete_a_partial_and_an_empty_run() -> None:
    options = _options("--statements", "5000")
    complete = BackendRun("embedded", ingest.IngestOutcome("embedded"))
    assert complete.ingest is not None
    complete.ingest.phases = [
        _phase(name, "requests/s", 10, 100, 5.0)
        for name in ("post-batch-100", "post-single", *ingest.QUERY_PHASES)
    ]
    complete.ingest.api_peak_rss = 150 * 2**20
    complete.ingest.processes = processes_note(1, "process", "api-ingest peak RSS")
    for mode in propagation.MODES:
        result = propagation.Result(mode, "embedded", "label", acked=10, delay_p50_ms=3.0)
        result.api_peak_rss = result.worker_peak_rss = 100 * 2**20
        if mode == "process":
            result.processes = processes_note(1, "process", "api-process peak RSS")
        complete.propagation.append(result)

    partial = BackendRun("embedded", ingest.IngestOutcome("embedded", error="interrupted"))
    assert partial.ingest is not None
    partial.ingest.phases = [_phase("post-batch-100", "statements/s", 40, 4000, 9.0)]
    skipped = propagation.Result("celery", "embedded", "label", skipped="no Redis")
    partial.propagation = [skipped]

    complete.discovered = _discovered_outcome("embedded")
    partial.discovered = discovered.DiscoveredOutcome("embedded", error="interrupted")
    complete.broker = [_broker_outcome(row) for row in broker.ROWS]
    partial.broker = [broker.BrokerOutcome("celery-redis-up", skipped="no_redis_at=redis://x")]
    checked = ValidationOutcome(
        [StepResult(step, 100, 0.01) for step in validation.STEPS], bytes_mean=1000.0
    )
    half_checked = ValidationOutcome([StepResult("validate-statement", 100, 0.01)])
    bare = reference.ReferenceOutcome(
        [_phase(row, "statements/s", 10, 100, 1.0) for row in reference.ROWS], acknowledged=200
    )
    half_bare = reference.ReferenceOutcome([_phase("bare-batch-100", "statements/s", 1, 100, 1.0)])

    empty = BackendRun("embedded")

    reports = [
        _report([run], options, check, ref)
        for run, check, ref in (
            (complete, checked, bare),
            (partial, half_checked, half_bare),
            (empty, None, None),
        )
    ]
    for tag in _ALL_TAGS:
        names = [_row_names(report, tag) for report in reports]
        assert names[0] == names[1] == names[2], tag
    assert [n for _, n in _row_names(reports[0], "[query]")] == list(ingest.QUERY_PHASES)
    assert [n for _, n in _row_names(reports[0], "[propagation]")] == [
        "inprocess",
        "process",
        "celery",
    ]
    assert [n for _, n in _row_names(reports[0], "[memory]")] == [
        "api-ingest",
        "api-inprocess",
        "api-process",
        "api-celery",
        "worker-celery",
    ]
    # The process mode's rows are measured in a complete run, `-` in the others.
    for report, measured in zip(reports, (True, False, False), strict=True):
        for tag, name in (("[propagation]", "process"), ("[memory]", "api-process")):
            line = next(x for x in report.splitlines() if x.startswith(tag) and f" {name} " in x)
            assert (line.split()[3] != "-") is measured, (tag, line)
    assert "[memory]      embedded  api-process                      100.0" in reports[0]
    assert (
        "[notes]       embedded  propagation-process derivation=process api_processes=1 "
        "derivation_processes=1 (api-process peak RSS: sum over them, VmHWM each)"
    ) in reports[0]
    assert (
        "[notes]       embedded  ingest derivation=process api_processes=1 "
        "derivation_processes=1 (api-ingest peak RSS: sum over them, VmHWM each)"
    ) in reports[0]
    assert _row_names(reports[0], "[validation]") == [
        ("local", "validate-statement"),
        ("local", "json-decode"),
        ("local", "json-decode-stdlib"),
        ("local", "validate-recognised"),
    ]
    assert _row_names(reports[0], "[discovered]") == [("embedded", "discovered-5-modules")]
    # A row not measured (or not yet) shows `-` in every column.
    for report, missing in ((reports[1], "json-decode"), (reports[2], "validate-statement")):
        line = next(x for x in report.splitlines() if x.startswith("[validation]") and missing in x)
        assert line.split()[3:] == ["-"] * len(VALIDATION.columns)
    for report in reports[1:]:
        line = next(x for x in report.splitlines() if "discovered-5-modules" in x)
        assert line.split()[3:] == ["-"] * len(DISCOVERED.columns)
    # Section order (the new ones at the end), then notes after every table line.
    for report in reports:
        tags = [line.split()[0] for line in report.splitlines()[1:] if line.startswith("[")]
        firsts = [tags.index(t) for t in _ALL_TAGS]
        assert firsts == sorted(firsts)
        assert tags[-1] == "[notes]" and tags.index("[notes]") > tags.index("[reference]")
    assert _row_names(reports[0], "[reference]") == [
        ("sqlite", "bare-batch-100"),
        ("sqlite", "bare-single"),
    ]
    assert [_measured(r, "[reference]") for r in reports] == [
        [True, True],
        [True, False],
        [False, False],
    ]
    assert "[notes]       sqlite    reference acknowledged=200" in reports[0]
    assert "[notes]       sqlite    reference not_run=interrupted" in reports[2]
    assert _row_names(reports[0], "[broker]") == [
        ("embedded", "celery-redis-up"),
        ("embedded", "celery-redis-down"),
    ]
    assert [_measured(r, "[broker]") for r in reports] == [
        [True, True],
        [False, False],
        [False, False],
    ]
    assert "embedded  broker-celery-redis-down acknowledged=1000 stored=1000" in reports[0]
    assert "embedded  broker-celery-redis-down store_check=ok" in reports[0]
    assert "embedded  broker-celery-redis-up skipped=no_redis_at=redis://x" in reports[1]
    assert "embedded  broker-celery-redis-down not_run=interrupted" in reports[1]
    assert "[notes]       embedded  propagation-celery skipped=no Redis" in reports[1]
    assert "[notes]       embedded  ingest error=interrupted" in reports[1]
    assert "[notes]       embedded  propagation-inprocess not_run=interrupted" in reports[1]
    assert "[notes]       embedded  propagation-process not_run=interrupted" in reports[1]
    assert "[notes]       embedded  discovered error=interrupted" in reports[1]
    assert "[notes]       embedded  discovered drain=ok" in reports[0]
    assert "[notes]       local     validation statement_bytes_mean=1000" in reports[0]
    assert "[notes]       local     validation not_run=interrupted" in reports[2]
    assert (
        "validation not_run=json-decode,json-decode-stdlib,validate-recognised (interrupted)"
        in reports[1]
    )
    assert "[notes]       embedded  discovered not_run=interrupted" in reports[2]


def test_a_standalone_benchmark_prints_only_its_sections() -> None:
    run = BackendRun("embedded")
    ingest_only = _report([run], _options("ingest"))
    assert "[propagation]" not in ingest_only and "[query]" in ingest_only
    assert [n for _, n in _row_names(ingest_only, "[memory]")] == ["api-ingest"]
    propagation_only = _report([run], _options("propagation", "--mode", "inprocess"))
    assert "propagation-celery not_run=not selected (--mode)" in propagation_only
    assert "propagation-process not_run=not selected (--mode)" in propagation_only
    assert "[ingest]" not in propagation_only and "[query]" not in propagation_only
    assert [n for _, n in _row_names(propagation_only, "[propagation]")] == [
        "inprocess",
        "process",
        "celery",
    ]
    assert [n for _, n in _row_names(propagation_only, "[memory]")] == [
        "api-inprocess",
        "api-process",
        "api-celery",
        "worker-celery",
    ]
    for alone, tag in (
        ("validation", "[validation]"),
        ("discovered", "[discovered]"),
        ("broker", "[broker]"),
        ("reference", "[reference]"),
    ):
        text = _report([run], _options(alone))
        assert {line.split()[0] for line in text.splitlines()[1:] if line.startswith("[")} == {
            tag,
            "[notes]",
        }, alone


def test_the_report_lists_backends_in_order_within_each_section() -> None:
    options = _options(environ=WITH_MONGODB)
    text = _report([BackendRun("embedded"), BackendRun("mongodb")], options)
    backends = [b for b, _ in _row_names(text, "[query]")]
    half = len(ingest.QUERY_PHASES)
    assert backends == ["embedded"] * half + ["mongodb"] * half
    assert {PROPAGATION.name, QUERY.name} <= {s.name for s, _ in sections([], options)}


# --- arguments -----------------------------------------------------------------------------


def test_no_arguments_run_everything_at_full_size_on_embedded_and_say_mongodb_is_skipped() -> None:
    options = _options()
    assert options.benchmark == "all"
    assert (options.ingest.statements, options.ingest.singles, options.ingest.batched) == (
        100_000,
        1_000,
        99_000,
    )
    assert options.ingest.batch_size == 100
    assert options.backends == ("embedded",)
    assert options.skipped == (MONGODB_SKIPPED,)
    assert MONGODB_SKIPPED == "mongodb: skipped (LRS_MONGODB_URL not set)"
    assert options.modes == ("inprocess", "process", "celery")
    assert options.derivation == "auto"
    assert options.redis_url == "redis://127.0.0.1:6379/0"
    assert options.name == "all-100000"


def test_mongodb_runs_too_when_its_url_is_set() -> None:
    options = _options(environ=WITH_MONGODB | {"LRS_REDIS_URL": "redis://r.invalid/3"})
    assert options.backends == ("embedded", "mongodb")
    assert options.skipped == ()
    assert options.mongodb_url == WITH_MONGODB["LRS_MONGODB_URL"]
    assert options.redis_url == "redis://r.invalid/3"
    only = _options("--backend", "mongodb", environ=WITH_MONGODB)
    assert only.backends == ("mongodb",)


def test_store_size_and_singles() -> None:
    options = _options("--statements", "5000", "--seconds", "5", "--rate", "50")
    assert (options.ingest.statements, options.ingest.singles, options.ingest.batched) == (
        5000,
        1000,
        4000,
    )
    assert (options.propagation.seconds, options.propagation.rate) == (5.0, 50.0)
    # An explicit rate applies to every mode.
    assert [options.propagation.rate_of(m) for m in propagation.MODES] == [50.0, 50.0, 50.0]
    assert options.propagation.statements_of("celery") == 250
    assert options.name == "all-5000"
    # A store smaller than the default singles keeps a tenth of it for singles.
    assert _options("--statements", "500").ingest.singles == 50
    assert _options("--statements", "500", "--singles", "0").ingest.singles == 0


def test_quick_is_small_and_explicit_options_win() -> None:
    quick = _options("ingest", "--quick", "--queries", "3")
    assert quick.benchmark == "ingest"
    assert (quick.ingest.statements, quick.ingest.queries) == (ingest.QUICK.statements, 3)
    assert quick.propagation == propagation.QUICK
    assert quick.name == f"ingest-{ingest.QUICK.statements}"


def test_propagation_alone_with_one_mode() -> None:
    options = _options("propagation", "--mode", "celery", "--post-size", "10", "--warmup", "0")
    assert options.benchmark == "propagation" and options.modes == ("celery",)
    assert (options.propagation.batch_size, options.propagation.warmup) == (10, 0.0)
    assert options.name == "propagation"
    process = _options("propagation", "--mode", "process", "--mode", "inprocess")
    assert process.modes == ("process", "inprocess")
    assert process.statements == 2 * 30_000


def test_the_process_mode_runs_lrs_serve_with_a_derivation_process() -> None:
    assert propagation.MODES == ("inprocess", "process", "celery")
    assert set(propagation.LABELS) == set(propagation.MODES)
    assert "derivation process" in propagation.LABELS["process"]
    result = propagation.Result("process", "embedded", propagation.LABELS["process"])
    result.processes = processes_note(1, "process", "api-process peak RSS")
    assert result.notes() == [result.processes]
    assert propagation.Result("inprocess", "embedded", "label").notes() == []


def test_derivation_option_for_the_ingest_and_discovered_servers() -> None:
    assert _options().derivation == "auto"
    for value in ("auto", "inprocess", "process"):
        assert _options("--derivation", value).derivation == value
    options = _options("discovered", "--derivation", "process", "--workers", "2")
    assert (options.derivation, options.workers) == ("process", 2)
    outcome = discovered.DiscoveredOutcome("embedded", workers=2)
    outcome.processes = processes_note(2, "process", "rss", "VmRSS, VmHWM")
    assert (
        "derivation=process api_processes=2 derivation_processes=1 "
        "(rss: sum over them, VmRSS, VmHWM each)"
    ) in outcome.notes(options.discovered)


def test_discovered_learners_option_spreads_the_statements_over_more_learners() -> None:
    assert _options("discovered").discovered.learners == discovered.DiscoveredConfig().learners
    options = _options("discovered", "--discovered-statements", "200", "--discovered-learners", "8")
    assert (options.discovered.statements, options.discovered.learners) == (200, 8)
    workload = discovered.Workload(options.discovered, "t")
    learners = {workload.statement(n)["actor"]["mbox"] for n in range(200)}
    assert len(learners) == 8
    assert "learners=8" in discovered.DiscoveredOutcome("embedded").notes(options.discovered)[0]
    _, viewed = workload.expected()
    assert set(viewed.values()) == {5}  # 200 statements, 8 learners, 5 modules


def test_header_shows_the_rate_of_each_mode_and_the_new_fields_at_the_end() -> None:
    env = {"commit": "0123456789abcdef", "tree": "clean", "cpus": 2, "python": "3.11.7"}
    header = _options().header(env)
    assert header["format"] == 7
    assert header["rate"] == "inprocess:1000,process:1000,celery:500/s"
    assert list(header)[-5:] == ["workers", "derivation", "discovered", "validations", "client"]
    assert header["client"] == "aiohttp"
    assert (header["workers"], header["derivation"]) == (1, "auto")
    assert (header["discovered"], header["validations"]) == (50_000, 20_000)
    explicit = _options("--rate", "250", "--workers", "3", "--derivation", "inprocess")
    assert (explicit.header(env)["rate"], explicit.header(env)["workers"]) == (
        "inprocess:250,process:250,celery:250/s",
        3,
    )
    assert explicit.header(env)["derivation"] == "inprocess"
    line = header_line(explicit.header(env))
    assert " workers=3 derivation=inprocess discovered=" in line
    celery_only = _options("propagation", "--mode", "celery", "--seconds", "10").header(env)
    assert (celery_only["rate"], celery_only["statements"]) == ("celery:500/s", 5000)
    assert _options("discovered").header(env)["statements"] == 50_000
    assert _options("validation", "--validations", "300").header(env)["statements"] == 300


def test_propagation_rates_default_per_mode() -> None:
    options = _options()
    assert options.propagation.rate is None
    assert propagation.DEFAULT_RATES == {"inprocess": 1000.0, "process": 1000.0, "celery": 500.0}
    assert [options.propagation.rate_of(m) for m in propagation.MODES] == [1000.0, 1000.0, 500.0]
    assert options.propagation.statements_of("inprocess") == 30_000
    assert options.propagation.statements_of("process") == 30_000
    assert options.propagation.statements_of("celery") == 15_000


def test_validation_and_discovered_options() -> None:
    options = _options()
    assert options.validation == validation.ValidationConfig()
    assert (options.validation.statements, options.validation.repeats) == (20_000, 3)
    assert (options.discovered.statements, options.discovered.batch_size) == (50_000, 500)
    assert (options.discovered.concurrency, options.discovered.learners) == (8, 200)
    assert options.discovered.drain_timeout == 600.0
    assert options.workers == 1
    quick = _options("--quick")
    assert quick.validation == validation.QUICK and quick.discovered == discovered.QUICK
    assert quick.discovered.statements < options.discovered.statements
    given = _options(
        "discovered",
        "--discovered-statements",
        "3000",
        "--concurrency",
        "4",
        "--workers",
        "2",
        "--quick",
    )
    assert (given.benchmark, given.discovered.statements) == ("discovered", 3000)
    assert (given.discovered.concurrency, given.workers) == (4, 2)
    assert given.name == "discovered-3000"
    checked = _options("validation", "--validations", "500", "--seed", "7")
    assert (checked.validation.statements, checked.validation.seed) == (500, 7)
    assert checked.name == "validation"


def test_discovered_workload_brings_a_new_item_of_one_of_five_modules_each_time() -> None:
    config = discovered.DiscoveredConfig(statements=1_234, learners=7)
    workload = discovered.Workload(config, "t")
    statements = [workload.statement(n) for n in range(config.statements)]
    assert len({s["object"]["id"] for s in statements}) == config.statements
    parents = [s["context"]["contextActivities"]["parent"][0]["id"] for s in statements]
    assert sorted(set(parents)) == workload.modules and len(workload.modules) == 5
    assert all(
        s["context"]["contextActivities"]["grouping"]
        == [{"objectType": "Activity", "id": workload.course}]
        for s in statements
    )
    pairs = zip(statements, parents, strict=True)
    assert all(s["object"]["id"].startswith(p + "/") for s, p in pairs)
    assert len({s["actor"]["mbox"] for s in statements}) == 7
    stamps = [s["timestamp"] for s in statements]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    bodies = workload.bodies()
    assert [count for _, count in bodies] == [500, 500, 234]
    items, viewed = workload.expected()
    assert sum(items.values()) == sum(viewed.values()) == config.statements
    # Every learner works in every module.
    assert len(viewed) == 7 * 5


def test_the_bench_statements_pass_the_validator_and_the_parser() -> None:
    # A real (tiny) run, nothing timed: a refused statement would make the rows meaningless.
    outcome = validation.run(validation.ValidationConfig(statements=50, repeats=1))
    assert outcome.error == ""
    assert [s.step for s in outcome.steps] == list(validation.STEPS)
    assert all(s.statements == 50 for s in outcome.steps)


@pytest.mark.parametrize(
    "argv",
    [
        ["--statements", "0"],
        ["--statements", "500", "--singles", "600"],
        ["--rate", "0"],
        ["--seconds", "-1"],
        ["--mode", "threads"],
        ["federation"],
        ["--backend", "mongodb"],  # without LRS_MONGODB_URL
        ["--workers", "0"],
        ["--workers", "65"],
        ["--derivation", "celery"],  # needs Redis and a worker: the propagation mode only
        ["--derivation", "threads"],
        ["--validations", "0"],
        ["--discovered-statements", "0"],
        ["discovered", "--statements", "3000"],  # sizes the ingest store, not this one
        ["validation", "--statements", "3000"],
    ],
)
def test_bad_arguments_exit_with_status_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _options(*argv)
    assert exit_info.value.code == 2


def test_the_client_does_not_collect_garbage_during_a_measured_phase() -> None:
    """The bench client's collector would stall its requests in flight (tens of ms), which the
    latency figures would blame on the server: it is paused for the phase, then back on."""
    import gc

    from bench.stats import measure

    seen: list[bool] = []

    async def call(job: int) -> int:
        seen.append(gc.isenabled())
        await asyncio.sleep(0)
        return 1

    assert gc.isenabled()
    result = asyncio.run(measure("phase", "requests/s", range(5), call, 2))
    assert seen == [False] * 5 and result.requests == 5
    assert gc.isenabled()


def test_the_reference_app_validates_and_stores_each_statement_with_five_index_rows(
    tmp_path: Path,
) -> None:
    from bench.bare_app import make_app
    from bench.data import generate

    path = tmp_path / "bare.sqlite3"
    _, statements = generate(7, 3)
    anonymous = {k: v for k, v in statements[0].items() if k != "id"}

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=make_app(str(path)))
        async with httpx.AsyncClient(transport=transport, base_url="http://bare") as client:
            bodies = [statements, anonymous, [statements[1], {"verb": 1}]]
            return [await client.post("/xapi/statements", json=body) for body in bodies]

    batch, single, bad = asyncio.run(post_all())
    assert batch.status_code == single.status_code == 200 and bad.status_code == 400
    ids = batch.json()
    assert len(set(ids)) == 3 and all(
        s.get("id", i) == i for s, i in zip(statements, ids, strict=True)
    )
    assert single.json()[0] not in ids
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM statements").fetchone()[0] == 4
        assert db.execute("SELECT count(*) FROM terms").fetchone()[0] == 4 * 4
        # ...and the fifth index row of each: the statement id's unique index.
        unique = db.execute("SELECT count(*) FROM pragma_index_list('statements') WHERE \"unique\"")
        assert unique.fetchone()[0] == 1


class ReadyClient:
    """Answers GET /ready with the given backlog check."""

    def __init__(self, backlog: object) -> None:
        self.body = json.dumps({"checks": {"backlog": backlog}}).encode()

    async def get(self, path: str, timeout: float | None = None) -> Answer:
        assert path == "/ready"
        return Answer(200, {}, self.body, "GET", path)


def test_the_backlog_owed_counts_statements_and_grown_modules_alike() -> None:
    """The ingest settle and the discovered drain read /ready through one function: nothing is
    owed only when no statement is underived and no grown module awaits its re-summary."""

    def read(backlog: object) -> object:
        return asyncio.run(derivation_backlog(ReadyClient(backlog)))  # type: ignore[arg-type]

    backlog = read({"underived": 3, "derivation_lag_seconds": 0.25, "resummaries_owed": 2})
    assert (backlog.underived, backlog.lag_seconds, backlog.resummaries) == (3, 0.25, 2)
    assert backlog.owed == 5
    assert read({"underived": 0, "derivation_lag_seconds": 0.0, "resummaries_owed": 1}).owed == 1
    older = read({"underived": 4, "derivation_lag_seconds": 1.5})  # a server before the field
    assert (older.owed, older.resummaries) == (4, 0)
    with pytest.raises(BacklogUnknown, match="store busy"):
        read({"ok": False, "error": "store busy"})
    with pytest.raises(BacklogUnknown, match="no figure"):
        read({"derivation_lag_seconds": 0.0})


def test_the_discovered_peak_is_the_scenarios_and_the_checks_is_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real (tiny) run, nothing timed: the peak of the row is read once drained, before the
    # check's GETs; the peak as the server stops (the check included) is in the notes.
    monkeypatch.setattr(discovered, "RESULTS_DIR", tmp_path)
    checked = False
    reads: list[tuple[bool, int | None]] = []  # (after the check?, the peak read)
    real_check, real_peak = discovered._check_progress, Server.peak_rss_bytes

    async def check_progress(*args: object) -> str:
        nonlocal checked
        verdict = await real_check(*args)
        checked = True
        return verdict

    def peak_rss_bytes(server: Server) -> int | None:
        reads.append((checked, real_peak(server)))
        return reads[-1][1]

    monkeypatch.setattr(discovered, "_check_progress", check_progress)
    monkeypatch.setattr(Server, "peak_rss_bytes", peak_rss_bytes)
    config = discovered.DiscoveredConfig(statements=200, batch_size=50, learners=4)
    outcome = discovered.run(config, "embedded")
    assert [after for after, _ in reads] == [False, True]
    assert (outcome.peak_rss, outcome.peak_rss_with_check) == tuple(v for _, v in reads)
    assert outcome.error == "" and outcome.progress_check.startswith("ok"), outcome
    assert outcome.peak_rss is not None and outcome.peak_rss_with_check is not None
    assert outcome.rss_end is not None and outcome.rss_end <= outcome.peak_rss
    assert outcome.peak_rss <= outcome.peak_rss_with_check
    expected = f"peak_rss_with_check_mib={round(outcome.peak_rss_with_check / 2**20, 1)}"
    assert expected in outcome.notes(config)


def test_the_new_content_workload_names_only_new_valid_activities_and_agents() -> None:
    """`python -m bench.new_content`: every statement is valid and names an Activity (with a
    definition) and an Agent (with a name) no other statement of the run names; the batches
    hold every statement once."""
    from bench.new_content import bodies
    from lrs.xapi.validation import validate_statement

    batches = bodies(250, 100, "t")
    assert [count for _, count in batches] == [100, 100, 50]
    statements = [s for body, _ in batches for s in json.loads(body)]
    for s in statements:
        validate_statement(s)
        assert s["object"]["definition"]["name"] and s["actor"]["name"]
    assert len({s["object"]["id"] for s in statements}) == 250
    assert len({s["actor"]["mbox"] for s in statements}) == 250
    assert len({s["id"] for s in statements}) == 250
