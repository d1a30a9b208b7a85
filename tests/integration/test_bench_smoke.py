"""The benchmark suite's smoke run: ``python -m bench --quick`` works and reports sane facts.

No timing is asserted here (CI machines vary); only what must hold whatever the speed: every
section is there, every run left the metrics exactly as the signals said, and the counts add up.
"""

from __future__ import annotations

import re

import pytest
from bench import calls, harness, producer, suite
from bench.config import FULL, QUICK

from ..support.processes import ROOT, run_python

#: The quick run takes about a minute on a quiet machine (the trickle and lag sections pace
#: themselves in real time); its fixture runs inside the first test that asks for it.
pytestmark = pytest.mark.timeout(300)

SECTIONS = (
    "## Targets",
    "## 1. Producer cost per signal",
    "## 2. Consumer drain rate",
    "## 3. End-to-end lag under a steady load",
    "## 4. Scaling with the number of circuits",
    "## 5. Memory",
    "## 6. Real breakers",
    "## 7. anyio circuit breaker: per-call overhead",
    "## 8. Breaker health collector: scrape cost",
    "## 9. Time in state: cost, off vs on",
    "## 10. Storm: worker threads transitioning in a tight loop",
    "## 11. Trickle: isolated transitions, total CPU per transition",
    "## 12. Calls: metering a passing call",
)
#: The sections with a table per backend, whose rows start with the backend's name.
PER_BACKEND = (*SECTIONS[1:7], *SECTIONS[10:13])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(the written report, what was printed) of one quick run, as a real subprocess."""
    output = tmp_path_factory.mktemp("bench") / "report.md"
    done = run_python("-m", "bench", "--quick", "--output", output, cwd=ROOT, timeout=230)
    return output.read_text(encoding="utf-8"), done.stdout


def _rows(report: str, section: str) -> list[list[str]]:
    """The data rows of every table in ``section``, as lists of cells."""
    start = report.index(section)
    end = report.find("\n## ", start + 1)
    body = report[start : end if end >= 0 else len(report)]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in body.splitlines()
        if line.startswith("| ")
    ]
    # Drop each table's header row (the one right after a non-table line).
    headers = {tuple(r) for r in rows if r and r[0] in ("Backend", "Target", "circuits", "measure")}
    return [r for r in rows if tuple(r) not in headers]


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.slow
def test_report_is_written_and_printed_with_every_section(report):
    written, printed = report
    assert written.strip() in printed
    positions = [written.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "Mode: quick" in written
    assert "- CPU: " in written
    assert "- Python: " in written


@pytest.mark.slow
def test_every_backend_ran(report):
    written, _ = report
    # trio is a test dependency, asyncio always there: both must appear in every per-backend table.
    for section in PER_BACKEND:
        backends = {row[0] for row in _rows(written, section) if row[0] in ("asyncio", "trio")}
        assert backends == {"asyncio", "trio"}, section


@pytest.mark.slow
def test_metrics_are_exact_after_every_run(report):
    written, _ = report
    assert "WRONG" not in written
    checked = [
        row[-1]
        for section in (*SECTIONS[1:3], *SECTIONS[4:7], *SECTIONS[10:])
        for row in _rows(written, section)
        if row[0] in ("asyncio", "trio", "uvloop") and row[1] != "ratio (big / small)"
        if "n/a" not in row[2]
    ]
    assert checked
    assert set(checked) == {"exact"}


@pytest.mark.slow
def test_every_drained_signal_took_exactly_one_path(report):
    written, _ = report
    rows = [r for r in _rows(written, SECTIONS[2]) if r[0] in ("asyncio", "trio", "uvloop")]
    assert len(rows) >= 8
    for row in rows:
        paths = row[-2]
        if paths == "n/a":  # a pipeline without stats(): nothing to add up
            continue
        taken = {
            name: _number(count)
            for name, count in re.findall(r"(stream|bridge|overflow|direct) ([\d,]+)", paths)
        }
        assert sum(taken.values()) == QUICK.drain_signals, row
        # The default buffer cannot hold the backlog: the overflow queue took some.
        if row[2] == "1,024":
            assert taken["overflow"] > 0, row


@pytest.mark.slow
def test_lag_runs_applied_every_signal_sent(report):
    written, _ = report
    rows = [r for r in _rows(written, SECTIONS[3]) if r[0] in ("asyncio", "trio", "uvloop")]
    assert len(rows) >= 6
    for row in rows:
        sent, applied = (_number(part) for part in row[2].split("/"))
        assert sent == applied == round(QUICK.lag_rate * QUICK.lag_seconds), row


@pytest.mark.slow
def test_memory_runs_pushed_the_configured_signal_counts(report):
    written, _ = report
    rows = [
        r
        for r in _rows(written, SECTIONS[5])
        if r[0] in ("asyncio", "trio") and r[1] != "ratio (big / small)"
    ]
    producers = QUICK.memory_threads + 1
    expected = {size // producers * producers for size in QUICK.memory_sizes}
    assert {_number(r[1]) for r in rows} == expected


@pytest.mark.slow
def test_trio_has_no_async_breaker_row(report):
    written, _ = report
    for section in (SECTIONS[6], SECTIONS[12]):
        rows = _rows(written, section)
        trio_async = next(r for r in rows if r[:2] == ["trio", "AsyncCircuitBreaker"])
        assert trio_async[2] == "n/a: asyncio only"


def test_a_missing_breaker_benchmark_is_reported_not_fatal(monkeypatch):
    monkeypatch.setattr(suite, "BREAKER_BENCH_MODULE", "bench.no_such_benchmark")
    section = suite.anyio_breaker_section(quick=True)
    assert section.startswith(SECTIONS[7])
    assert "not available (`bench.no_such_benchmark` is not installed)" in section


def test_a_broken_breaker_benchmark_is_not_hidden(monkeypatch):
    # Only the module itself being absent means "not available"; its own import errors surface.
    monkeypatch.setattr(suite, "BREAKER_BENCH_MODULE", "bench.no_such_package.sub")
    with pytest.raises(ModuleNotFoundError, match=r"^No module named 'bench\.no_such_package'$"):
        suite.anyio_breaker_section(quick=True)


@pytest.mark.slow
def test_time_in_state_is_measured_off_and_on(report):
    written, _ = report
    rows = _rows(written, SECTIONS[9])
    assert [row[0].split(",")[0] for row in rows] == [
        "loop-thread producer",
        "drain of 10",
        "direct apply (no consumer)",
        "scrape of 1",
    ]
    # the scrape with time in state on carries six more series per circuit than the six state
    # series and the four own-transition counters at 0 (each with its _created line) of off:
    # about 1.4 times the bytes
    off_kib, on_kib = (int(cell.split(", ")[1].removesuffix(" KiB")) for cell in rows[3][1:3])
    assert 1.25 < on_kib / off_kib < 1.55


@pytest.mark.slow
def test_storm_ran_every_configuration_and_exported_every_transition(report):
    written, _ = report
    rows = [r for r in _rows(written, SECTIONS[10]) if r[0] in ("asyncio", "trio")]
    configurations = {(r[0], int(r[1]), r[2]) for r in rows}
    assert configurations == {
        (backend, threads, scraper)
        for backend in ("asyncio", "trio")
        for threads in QUICK.storm_threads
        for scraper in ("no", "yes")
    }
    assert {r[-1] for r in rows} == {"exact"}
    assert all(
        ("PASS" in r[4] or "FAIL" in r[4]) and ("PASS" in r[7] or "FAIL" in r[7]) for r in rows
    )


@pytest.mark.slow
def test_trickle_measured_both_drivers_and_ours_was_applied(report):
    written, _ = report
    rows = [r for r in _rows(written, SECTIONS[11]) if r[0] in ("asyncio", "trio")]
    assert {(r[0], r[1]) for r in rows} == {
        (backend, where)
        for backend in ("asyncio", "trio")
        for where in ("loop thread", "worker thread")
    }
    assert {r[-1] for r in rows} == {"exact"}
    for row in rows:
        assert "n/a" not in row[7], row


@pytest.mark.slow
def test_whole_call_covers_every_breaker_action_and_listener(report):
    written, _ = report
    rows = [r for r in _rows(written, SECTIONS[6]) if r[0] in ("asyncio", "trio")]
    measured = {(r[0], r[1], r[2]) for r in rows if "n/a" not in r[2]}
    actions = ("transition", "failing call that trips")
    assert measured == {
        *(
            ("asyncio", kind, a)
            for kind in ("CircuitBreaker", "AsyncCircuitBreaker", "AnyioCircuitBreaker")
            for a in actions
        ),
        *(("trio", kind, a) for kind in ("CircuitBreaker", "AnyioCircuitBreaker") for a in actions),
    }
    for row in rows:
        if "n/a" not in row[2]:
            assert all(re.search(r"\([+-]\d+%\)$", cell) for cell in row[4:7]), row


def _calls_rows(written: str) -> list[list[str]]:
    return [r for r in _rows(written, SECTIONS[12]) if r[0] in ("asyncio", "trio")]


def _check_calls_rows(rows: list[list[str]]) -> None:
    """Every measured row: figures over bare, the sync breaker's targets marked, counts exact."""
    for row in rows:
        if "n/a" in row[2]:
            continue
        assert re.fullmatch(r"\S+ [nµm]?s", row[2]), row  # the bare call
        assert re.search(r"\([+-]\d+\.\d%\)", row[3]), row
        assert re.search(r"\([+-]\d+\.\d%\)$", row[4]), row
        # a number, or undefined: a quick run on a loaded machine can time direct below bare
        assert re.match(r"(-?\d+\.\d\d|n/a: direct not above bare)( |$)", row[5]), row
        # the caller's time, and the total CPU with the consumer's work, both reported
        assert len(re.findall(r"\([+-]\d+\.\d%\)", row[8])) == 2, row
        sync = row[1] == "CircuitBreaker"
        assert sync == ("PASS" in row[3] or "FAIL" in row[3]), row
        assert sync == ("PASS" in row[5] or "FAIL" in row[5]), row
        assert row[-1] == "exact", row


@pytest.mark.slow
def test_calls_measured_every_breaker_bare_metered_and_direct(report):
    written, _ = report
    rows = _calls_rows(written)
    measured = {(r[0], r[1]) for r in rows if "n/a" not in r[2]}
    assert measured == {
        *(
            ("asyncio", kind)
            for kind in ("CircuitBreaker", "AsyncCircuitBreaker", "AnyioCircuitBreaker")
        ),
        *(("trio", kind) for kind in ("CircuitBreaker", "AnyioCircuitBreaker")),
    }
    _check_calls_rows(rows)
    targets = {r[0]: r[1:] for r in _rows(written, SECTIONS[0])}
    overhead = next(t for t in targets if t.startswith("calls, sync CircuitBreaker on the loop"))
    share = next(t for t in targets if t.startswith("calls, sync CircuitBreaker: metering adds"))
    assert "15%" in overhead
    assert "1/3" in share
    assert any(t.startswith("(info) calls, sync CircuitBreaker: total CPU") for t in targets)


def test_a_share_of_direct_that_is_undefined_is_said_so_and_fails_its_target():
    # A quick run on a loaded CI machine once timed direct's median below bare's: the share's
    # denominator was negative, and the report printed "nan".
    result = calls.CallsResult("CircuitBreaker", calls=2)
    result.samples = {"bare": [2_000.0, 2_000.0], "metered": [2_100.0] * 2, "direct": [1_900.0] * 2}
    result.cpu = {"bare": [3_000.0], "metered": [3_200.0], "direct": [2_900.0]}

    def rendered() -> list[str]:
        [row] = _calls_rows(
            suite.calls_section(QUICK, {"trio": suite.BackendResults(calls=[result])})
        )
        return row

    row = rendered()
    assert row[5] == "n/a: direct not above bare **FAIL**"
    assert row[9] == "n/a: direct not above bare"
    _check_calls_rows([row])
    result.samples["direct"] = [2_400.0] * 2
    assert rendered()[5] == "0.25 PASS"


def test_the_scaling_target_is_judged_on_the_cold_medians_net_of_the_no_op():
    # The no-op used to be timed only as a batch, a cold pass, against ours' batch, a warm
    # second pass over the same objects: at 10,000 circuits the net figure fell by 40%.
    def scaled(ours: float, no_op: float, batched: float) -> producer.ProducerResult:
        def costs(each: float, batch: float) -> harness.Costs:
            return harness.Costs(0.0, 0.0, each=[each] * 3, batched=[batch] * 3)

        return producer.ProducerResult(
            upstream=costs(15_000.0, 15_000.0),
            ours=costs(ours, batched),
            floor=costs(20.0, 20.0),
            check="exact",
            trivial=costs(no_op, no_op),
        )

    def cell(*results: producer.ProducerResult) -> str:
        scaling = dict(zip((1, 100, 10_000), results, strict=True))
        written = suite.targets_section(QUICK, {"trio": suite.BackendResults(scaling=scaling)})
        [row] = [r for r in _rows(written, SECTIONS[0]) if r[0].startswith("producer cost net")]
        assert "per-call median" in row[0]
        return row[1]

    # Net of the no-op, the medians grow 250 -> 300 ns (+20%); the batched figures would not.
    assert cell(scaled(380, 130, 410), scaled(385, 131, 412), scaled(530, 230, 440)) == "±20% PASS"
    assert cell(scaled(380, 130, 410), scaled(385, 131, 412), scaled(540, 230, 440)) == (
        "±24% **FAIL**"
    )
    # Ours no dearer than the no-op at 1 circuit: no growth can be told, and the target fails.
    assert cell(scaled(130, 130, 410), scaled(385, 131, 412), scaled(530, 230, 440)) == (
        "n/a: not above the no-op at 1 circuit **FAIL**"
    )


@pytest.mark.slow
def test_the_calls_section_alone_at_a_small_scale(tmp_path):
    output = tmp_path / "calls.md"
    run_python(
        "-m",
        "bench",
        "--only",
        "calls",
        "--scale",
        "0.01",
        "--backend",
        "trio",
        "--output",
        output,
        cwd=ROOT,
        timeout=110,
    )
    written = output.read_text(encoding="utf-8")
    headings = re.findall(r"^## .*$", written, flags=re.MULTILINE)
    assert headings == [SECTIONS[0], SECTIONS[12]]
    rows = _calls_rows(written)
    assert [r[1] for r in rows] == ["CircuitBreaker", "AsyncCircuitBreaker", "AnyioCircuitBreaker"]
    _check_calls_rows(rows)
    assert f"{FULL.scaled(0.01).calls:,} calls per side" in written


@pytest.mark.slow
def test_targets_say_pass_or_fail_for_every_issue_target(report):
    written, _ = report
    rows = _rows(written, SECTIONS[0])
    titles = [r[0] for r in rows]
    for wanted in (
        "storm (4 threads + scraper): throughput",
        "trickle, loop thread",
        "loop-thread producer >= 30x",
        "worker-thread producer >= 30x",
        "drain >= 20x",
        "calls, sync CircuitBreaker on the loop thread",
        "calls, sync CircuitBreaker: metering adds <= 1/3",
    ):
        assert any(t.startswith(wanted) for t in titles), wanted
    for row in rows:
        if not row[0].startswith("(info)"):
            assert all("PASS" in cell or "FAIL" in cell for cell in row[1:]), row


@pytest.mark.slow
def test_one_section_alone_at_a_small_scale(tmp_path):
    output = tmp_path / "storm.md"
    run_python(
        "-m",
        "bench",
        "--only",
        "storm",
        "--scale",
        "0.1",
        "--backend",
        "asyncio",
        "--output",
        output,
        cwd=ROOT,
        timeout=110,
    )
    written = output.read_text(encoding="utf-8")
    assert "Command: `python -m bench --only storm --scale 0.1 --backend asyncio" in written
    headings = re.findall(r"^## .*$", written, flags=re.MULTILINE)
    assert headings == [SECTIONS[0], SECTIONS[10]]
    rows = _rows(written, SECTIONS[10])
    assert len(rows) == 2 * len(FULL.storm_threads)
    assert {r[-1] for r in rows} == {"exact"}


def test_scale_shrinks_counts_but_keeps_what_a_figure_is_of():
    small = FULL.scaled(0.1)
    assert small.storm_transitions == FULL.storm_transitions // 10
    assert small.drain_signals == FULL.drain_signals // 10
    assert small.storm_circuits == FULL.storm_circuits
    assert small.storm_threads == FULL.storm_threads
    assert small.big_buffer == FULL.big_buffer
    assert small.calls == FULL.calls // 10
    assert small.quick
    assert FULL.scaled(1) == FULL


def test_unknown_sections_and_scales_are_refused(capsys):
    with pytest.raises(SystemExit):
        suite.main(["--only", "stormy"])
    assert "no section 'stormy'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite.main(["--scale", "0"])
    assert "--scale must be in (0, 10], got 0.0" in capsys.readouterr().err
