"""The call queries, answered by a real Prometheus scraping metered breakers.

Metered ``AnyioCircuitBreaker``s (asyncio and trio) make known calls through a running consumer;
Prometheus scrapes every second, with the shipped alerting and recording rules. The error ratio
over 24 h, the rejection ratio, the trips by reason and the latency quantile of
``docs/metrics.md``, every query of the dashboard's "Calls" row, the call recording rules and the
call alerts must come out as the calls made them: in one process, and summed over worker
processes in prometheus_client's multiprocess mode (``tests/children/calls_for_prometheus.py``),
each making the calls of ``tests/support/call_traffic.py``.
Ratios of two counters scraped together are exact whatever ``rate()`` extrapolates; with every
duration in the first bucket (under 0.25 s), ``histogram_quantile(q)`` is exactly ``q * 0.25``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import pytest
from fluxgate.errors import CallNotPermittedError
from fluxgate.retries import Never
from fluxgate.trippers import FailureRate, MinRequests
from prometheus_client import CollectorRegistry, start_http_server

from fluxgate_stream import AnyioCircuitBreaker, MultiProcessCollector, SignalPipeline, meter_calls
from fluxgate_stream._catalogue import CALL_KINDS, CALLS

from ..support.call_traffic import (
    BUCKETS,
    CALLS_MADE,
    SHADOW_TRIPS_MADE,
    make_breakers,
    make_calls,
)
from ..support.processes import CHILDREN, importing_tests, start_python
from ..support.prom import ROOT, PrometheusServer, ScrapeWatch, eventually, require_tool
from .test_prometheus_e2e import (
    ALERTS,
    CALLS_ROW,
    RULES,
    dashboard_targets,
    exporter,  # noqa: F401  # the fixture, reused
    prometheus,  # noqa: F401  # likewise
    row_titles,
)

pytestmark = [pytest.mark.anyio, pytest.mark.prometheus, pytest.mark.slow]

NAME = "payment_api"
#: The queries of docs/metrics.md's "Calls" section, for one circuit.
ERROR_RATIO = (
    'sum(increase(circuit_breaker_calls_total{kind="failed"}[24h])) by (circuit_name) '
    '/ sum(increase(circuit_breaker_calls_total{kind=~"successful|failed"}[24h])) by (circuit_name)'
)
REJECTION_RATIO = (
    'sum(rate(circuit_breaker_calls_total{kind="not_permitted"}[5m])) by (circuit_name) '
    "/ sum(rate(circuit_breaker_calls_total[5m])) by (circuit_name)"
)
P95 = (
    "histogram_quantile(0.95, "
    "sum(rate(circuit_breaker_call_duration_seconds_bucket[5m])) by (circuit_name, le))"
)
TRIPS = "sum(increase(circuit_breaker_trips_total[1h])) by (circuit_name, reason)"


def one(server: PrometheusServer, expr: str) -> float | None:
    rows = server.query(expr)
    values = [float(row["value"][1]) for row in rows if row["metric"].get("circuit_name") == NAME]
    return values[0] if len(values) == 1 else None


def answers(server: PrometheusServer) -> tuple[bool, dict[str, Any]]:
    trips = {
        row["metric"]["reason"]: float(row["value"][1])
        for row in server.query(TRIPS)
        if row["metric"].get("circuit_name") == NAME
    }
    got: dict[str, Any] = {
        "error_ratio": one(server, ERROR_RATIO),
        "rejection_ratio": one(server, REJECTION_RATIO),
        "p95": one(server, P95),
        "tripped_by": sorted(reason for reason, n in trips.items() if n > 0),
    }
    done = (
        got["error_ratio"] == pytest.approx(0.4)
        and got["rejection_ratio"] == pytest.approx(4 / 9)
        and got["p95"] is not None
        and got["p95"] == pytest.approx(0.95 * BUCKETS[0])  # every call in the first bucket
        and got["tripped_by"] == ["failure_rate"]
    )
    return done, got


async def test_the_metrics_pages_call_queries_answer_what_the_calls_made(
    anyio_backend,
    registry,
    exporter,  # noqa: F811  # the fixture imported above
    prometheus,  # noqa: F811  # likewise
):
    server, watch = prometheus, exporter.watch
    pipeline = SignalPipeline()
    cb = AnyioCircuitBreaker(tripper=MinRequests(5) & FailureRate(0.4), retry=Never())
    meter_calls(cb, NAME, registry, pipeline=pipeline, buckets=BUCKETS)

    async def ok() -> None:
        pass

    async def fail() -> None:
        raise ConnectionError

    def zeros() -> tuple[bool, Any]:
        rows = server.query(f"count_over_time({CALLS.sample}[1h])")
        counts = [float(row["value"][1]) for row in rows]
        return len(counts) == 5 and min(counts) >= 3, counts

    # Prometheus holds the zeros a few times first, so that increase() counts every call.
    await eventually(server, watch, zeros, what="the call counters at 0")
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        for _ in range(3):
            await cb.call(ok)
        for _ in range(2):
            with suppress(ConnectionError):
                await cb.call(fail)  # the second trips: 2 of 5 failed
        assert cb.info().state == "open"
        for _ in range(4):
            with suppress(CallNotPermittedError):
                await cb.call(ok)
        await pipeline.flush()
        tg.cancel_scope.cancel()
    # 3 successful, 2 failed (error ratio 0.4), 4 rejected of 9 calls.
    await eventually(server, watch, lambda: answers(server), what="the call queries' answers")


def test_the_queries_checked_here_are_the_metrics_pages():
    page = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    for query in (ERROR_RATIO, REJECTION_RATIO, P95, TRIPS):
        assert f"`{query}`" in page, query


# -- the dashboard's Calls row, the call recording rules and alerts ------------------------------

#: The Grafana variables, for the Calls row: every job, instance and circuit; a rate window and
#: a range that hold every call however long the checks wait.
VARIABLES = {
    "$job": ".*",
    "$instance": ".*",
    "$circuit": ".*",
    "$__rate_interval": "5m",
    "$__range": "1h",
}
RATE_RULE = "instance_circuit_name:circuit_breaker_calls:rate5m"
REJECTED_RULE = "instance_circuit_name:circuit_breaker_calls_not_permitted:ratio_rate5m"
FAILED_RULE = "instance_circuit_name:circuit_breaker_calls_failed:ratio_rate5m"
#: Per circuit, the share of its calls refused, and of those that ran the share failed.
REJECTED = {"payment_api": 4 / 9, "search_api": 0, "ranking_api": 0}
FAILED = {"payment_api": 0.4, "search_api": 0.4, "ranking_api": 0.5}


def calls_row_targets() -> list[tuple[str, dict[str, Any]]]:
    """Every query of the dashboard's Calls row: (panel title, target)."""
    rows = row_titles()
    return [(title, target) for title, target in dashboard_targets() if rows[title] == CALLS_ROW]


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def by_circuit(rows: list[dict[str, Any]], *labels: str, instant: bool) -> dict[Any, float]:
    """A query's (last) value per circuit, or per (circuit, *labels)."""
    out: dict[Any, float] = {}
    for row in rows:
        metric = row["metric"]
        key = (metric["circuit_name"], *(metric[label] for label in labels))
        value = row["value"][1] if instant else row["values"][-1][1]
        out[key if labels else key[0]] = float(value)
    return out


def check_calls(server: PrometheusServer, ks: tuple[int, ...]) -> tuple[bool, dict[str, Any]]:
    """The Calls row's panels and the call rules, for one process per ``k`` in ``ks``, each
    having made ``CALLS_MADE`` times its ``k`` (one process: ``ks`` = (k,))."""
    workers = len(ks)
    answers: dict[str, Any] = {}
    ok = True
    targets = calls_row_targets()
    assert len(targets) == 8, targets  # a new panel of the row must be checked below
    for title, target in targets:
        expr = substitute(target["expr"])
        key = f"{title} [{target['refId']}]"
        if title == "Shadow trips over the time range":
            answers[key] = by_circuit(server.query(expr), instant=True)
        elif target.get("instant"):
            answers[key] = by_circuit(server.query(expr), "reason", instant=True)
        elif title == "Calls per second by kind":
            answers[key] = by_circuit(server.query_range(expr), "kind", instant=False)
        else:
            answers[key] = by_circuit(server.query_range(expr), instant=False)
    # Calls per second by kind: every kind, at 0 from the meter's creation; rates in the
    # proportions of the calls made (the same extrapolation for series scraped together).
    rates = answers["Calls per second by kind [A]"]
    ok &= set(rates) == {(name, kind) for name in CALLS_MADE for kind in CALL_KINDS}
    for name, made in CALLS_MADE.items():
        total = sum(rates.get((name, kind), 0.0) for kind in CALL_KINDS)
        ok &= total > 0 and all(
            rates.get((name, kind), -1) / total
            == pytest.approx(made.get(kind, 0) / sum(made.values()))
            for kind in CALL_KINDS
        )
    ok &= answers["Rejection ratio [A]"] == pytest.approx(REJECTED)
    ok &= answers["Failure ratio [A]"] == pytest.approx(FAILED)
    for ref_id, quantile in (("A", 0.5), ("B", 0.95), ("C", 0.99)):
        ok &= answers[f"Call latency (p50, p95, p99) [{ref_id}]"] == pytest.approx(
            dict.fromkeys(CALLS_MADE, quantile * BUCKETS[0])
        )
    # One trip per worker, by the failure rate; search_api never tripped, nor did ranking_api,
    # in metrics_only, whose tripper crossed its threshold twice in each worker.
    ok &= answers["Trips by reason over the time range [A]"] == {
        ("payment_api", "failure_rate"): float(workers)
    }
    ok &= answers["Shadow trips over the time range [A]"] == {
        "ranking_api": float(SHADOW_TRIPS_MADE * workers)
    }
    # The recording rules: the instance's rate and ratios over 5 minutes.
    recorded = {
        rule: by_circuit(server.query(rule), instant=True)
        for rule in (RATE_RULE, REJECTED_RULE, FAILED_RULE)
    }
    answers["rules"] = recorded
    ok &= recorded[REJECTED_RULE] == pytest.approx(REJECTED)
    ok &= recorded[FAILED_RULE] == pytest.approx(FAILED)
    for name, made in CALLS_MADE.items():
        calls = sum(made.values()) * sum(ks)
        # rate() over 5 minutes of data that start at 0: at least the calls / 300 s, and
        # stretched by at most 1.1 scrape intervals' extrapolation at the end.
        ok &= calls / 300 <= recorded[RATE_RULE].get(name, 0.0) <= calls * 1.3 / 300
    return ok, answers


async def zeros_held(server: PrometheusServer, watch: ScrapeWatch) -> None:
    """Wait until Prometheus holds every call counter at 0 a few times (increase() and rate()
    then count every call)."""

    def probe() -> tuple[bool, Any]:
        rows = server.query(f"count_over_time({CALLS.sample}[1h])")
        counts = [float(row["value"][1]) for row in rows]
        return len(counts) == len(CALLS_MADE) * len(CALL_KINDS) and min(counts) >= 3, counts

    await eventually(server, watch, probe, what="the call counters at 0")


def check_alerts(server: PrometheusServer) -> tuple[bool, Any]:
    raised = {
        (a["labels"]["alertname"], a["labels"]["circuit_name"], a["state"], float(a["value"]))
        for a in server.api("alerts")["alerts"]
        if a["labels"]["alertname"].startswith("CircuitBreakerCalls")
    }
    # payment_api refuses 4 of 9 calls; search_api fails 2 of 5 while closed; payment_api fails
    # as much, but it is open, and ranking_api 3 of 6, but in metrics_only. Each has at least
    # 0.1 calls a second over 5 minutes.
    expected = {
        ("CircuitBreakerCallsRejected", "payment_api", "pending"),
        ("CircuitBreakerCallsFailing", "search_api", "pending"),
    }
    values = {alert[:3]: alert[3] for alert in raised}
    done = set(values) == expected
    done &= values.get(("CircuitBreakerCallsFailing", "search_api", "pending")) == pytest.approx(
        0.4
    )
    done &= values.get(("CircuitBreakerCallsRejected", "payment_api", "pending")) == pytest.approx(
        4 / 9
    )
    return done, sorted(raised)


async def test_the_dashboards_calls_row_the_call_rules_and_alerts_in_one_process(
    anyio_backend,
    registry,
    exporter,  # noqa: F811  # the fixture imported above
    prometheus,  # noqa: F811  # likewise
):
    """k = 10 in one process, as many calls as the three workers below make together: 90
    through payment_api, 50 through search_api, 60 through ranking_api (2 shadow trips), enough
    for the alerts' 0.1 calls a second over 5 minutes."""
    server, watch = prometheus, exporter.watch
    k = 10
    traffic = make_breakers(k, SignalPipeline(), registry)
    await zeros_held(server, watch)
    await make_calls(traffic, k)
    await eventually(
        server, watch, lambda: check_calls(server, (k,)), what="the Calls row and rules"
    )
    await eventually(server, watch, lambda: check_alerts(server), what="the call alerts")


@pytest.fixture
def multiprocess_exporter(tmp_path: Path) -> Iterator[tuple[Path, str, ScrapeWatch]]:
    """fluxgate-stream's ``MultiProcessCollector`` over a fresh directory, served over HTTP: the
    one collector of the worker processes that write there, which drops a dead worker's state
    gauge (as ``mark_process_dead`` would)."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    watch = ScrapeWatch()
    registry.register(watch)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield directory, f"127.0.0.1:{server.server_port}", watch
    server.shutdown()
    server.server_close()
    thread.join()


def read_line(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=30)
        raise AssertionError(process.stderr.read() if process.stderr else "no output")
    return json.loads(line)


#: The k of each worker process: 10 runs of ``CALLS_MADE`` in all, 50 calls through search_api
#: (the fewest), comfortably above the call alerts' 0.1 calls a second over 5 minutes (30), which
#: an instance (the workers together) must make.
WORKER_KS = (2, 3, 5)


async def test_the_dashboards_calls_row_the_call_rules_and_alerts_summed_over_workers(
    anyio_backend, tmp_path, multiprocess_exporter
):
    """Three worker processes (k = 2, 3, 5) in multiprocess mode: the collector sums their
    counters and histograms, and every query answers for the sum: 90 calls through payment_api,
    3 trips (one per worker), 50 through search_api, 60 through ranking_api and 6 shadow trips
    (two per worker). The call alerts go pending as in one process: CircuitBreakerCallsFailing
    joins the state gauge, which counts live workers only, so the workers wait (alive) until
    the alerts are checked."""
    directory, target, watch = multiprocess_exporter
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    server = PrometheusServer(require_tool("prometheus"), prometheus_dir, [target], [ALERTS, RULES])
    env = importing_tests({**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)})
    workers = [
        start_python(
            CHILDREN / "calls_for_prometheus.py",
            str(k),
            anyio_backend,
            env=env,
            stdin=subprocess.PIPE,
        )
        for k in WORKER_KS
    ]
    try:
        for worker in workers:
            assert read_line(worker) == {"pid": worker.pid, "ready": True}
        server.start()
        try:
            await zeros_held(server, watch)
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            for worker in workers:
                assert read_line(worker) == {"pid": worker.pid, "done": True}
            await eventually(
                server,
                watch,
                lambda: check_calls(server, WORKER_KS),
                what="the Calls row and rules over the workers",
            )
            await eventually(
                server, watch, lambda: check_alerts(server), what="the call alerts over the workers"
            )
            for worker in workers:
                assert worker.poll() is None  # alive until now: their state gauge still counted
                assert worker.stdin is not None
                worker.stdin.write("exit\n")
                worker.stdin.flush()
            for worker in workers:
                assert worker.wait(timeout=30) == 0
        finally:
            server.stop()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate(timeout=30)
