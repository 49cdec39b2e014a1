"""The benchmark harness's pure parts: statistics, the report format, argument parsing.

No server is started and no figure is asserted: timing belongs in `python -m bench` output,
never in a test. What is pinned here is what makes runs comparable: the rows, their order and
the columns of the printed report, whatever the figures or the failures of a run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `bench` lives next to `tests`, outside the installed packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ingest, propagation  # noqa: E402
from bench.__main__ import MONGODB_SKIPPED, parse  # noqa: E402
from bench.report import (  # noqa: E402
    INGEST,
    MEMORY,
    PROPAGATION,
    QUERY,
    SECTIONS,
    Column,
    cell,
    header_line,
    render,
    section_json,
    section_lines,
)
from bench.server import vm_hwm_bytes  # noqa: E402
from bench.stats import PhaseResult, Recorder, percentile  # noqa: E402
from bench.suite import BackendRun, Options, notes, sections  # noqa: E402

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


# --- suite rows: fixed whatever ran --------------------------------------------------------


def _options(*argv: str, environ: dict[str, str] | None = None) -> Options:
    return parse(list(argv), NO_MONGODB if environ is None else environ)


def _row_names(text: str, tag: str) -> list[tuple[str, str]]:
    return [
        (line.split()[1], line.split()[2])
        for line in text.splitlines()
        if line.startswith(tag) and line.split()[1] != "backend"
    ]


def _report(runs: list[BackendRun], options: Options) -> str:
    info = {"format": 1, "statements": options.ingest.statements}
    return render(info, options.skipped, sections(runs, options), notes(runs, options))


def test_rows_are_the_same_for_a_complete_a_partial_and_an_empty_run() -> None:
    options = _options("--statements", "5000")
    complete = BackendRun("embedded", ingest.IngestOutcome("embedded"))
    assert complete.ingest is not None
    complete.ingest.phases = [
        _phase(name, "requests/s", 10, 100, 5.0)
        for name in ("post-batch-100", "post-single", *ingest.QUERY_PHASES)
    ]
    complete.ingest.api_peak_rss = 150 * 2**20
    for mode in propagation.MODES:
        result = propagation.Result(mode, "embedded", "label", acked=10, delay_p50_ms=3.0)
        result.api_peak_rss = result.worker_peak_rss = 100 * 2**20
        complete.propagation.append(result)

    partial = BackendRun("embedded", ingest.IngestOutcome("embedded", error="interrupted"))
    assert partial.ingest is not None
    partial.ingest.phases = [_phase("post-batch-100", "statements/s", 40, 4000, 9.0)]
    skipped = propagation.Result("celery", "embedded", "label", skipped="no Redis")
    partial.propagation = [skipped]

    empty = BackendRun("embedded")

    reports = [_report([run], options) for run in (complete, partial, empty)]
    for tag in ("[ingest]", "[query]", "[propagation]", "[memory]"):
        names = [_row_names(report, tag) for report in reports]
        assert names[0] == names[1] == names[2], tag
    assert [n for _, n in _row_names(reports[0], "[query]")] == list(ingest.QUERY_PHASES)
    assert [n for _, n in _row_names(reports[0], "[propagation]")] == ["inprocess", "celery"]
    assert [n for _, n in _row_names(reports[0], "[memory]")] == [
        "api-ingest",
        "api-inprocess",
        "api-celery",
        "worker-celery",
    ]
    # Section order, then notes after every table line.
    tags = [line.split()[0] for line in reports[1].splitlines()[1:] if line.startswith("[")]
    firsts = [tags.index(t) for t in ("[ingest]", "[query]", "[propagation]", "[memory]")]
    assert firsts == sorted(firsts)
    assert "[notes]       embedded  propagation-celery skipped=no Redis" in reports[1]
    assert "[notes]       embedded  ingest error=interrupted" in reports[1]
    assert "[notes]       embedded  propagation-inprocess not_run=interrupted" in reports[1]


def test_a_standalone_benchmark_prints_only_its_sections() -> None:
    run = BackendRun("embedded")
    ingest_only = _report([run], _options("ingest"))
    assert "[propagation]" not in ingest_only and "[query]" in ingest_only
    assert [n for _, n in _row_names(ingest_only, "[memory]")] == ["api-ingest"]
    propagation_only = _report([run], _options("propagation", "--mode", "inprocess"))
    assert "propagation-celery not_run=not selected (--mode)" in propagation_only
    assert "[ingest]" not in propagation_only and "[query]" not in propagation_only
    assert [n for _, n in _row_names(propagation_only, "[memory]")] == [
        "api-inprocess",
        "api-celery",
        "worker-celery",
    ]


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
    assert options.modes == ("inprocess", "celery")
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
    assert options.propagation.statements == 250
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
    ],
)
def test_bad_arguments_exit_with_status_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _options(*argv)
    assert exit_info.value.code == 2
