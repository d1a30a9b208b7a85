"""The metrics page's call queries, answered by a real Prometheus scraping a metered breaker.

A metered ``AnyioCircuitBreaker`` (asyncio and trio) makes known calls through a running
consumer; Prometheus scrapes every second. The error ratio over 24 h, the rejection ratio, the
trips by reason and the latency quantile of ``docs/metrics.md`` must come out as the calls made
them. Ratios of two counters scraped together are exact whatever ``increase()`` extrapolates.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import anyio
import pytest
from fluxgate.errors import CallNotPermittedError
from fluxgate.retries import Never
from fluxgate.trippers import FailureRate, MinRequests

from fluxgate_stream import AnyioCircuitBreaker, SignalPipeline, meter_calls
from fluxgate_stream._catalogue import CALLS

from ..support.prom import PrometheusServer, eventually
from .test_prometheus_e2e import exporter, prometheus  # noqa: F401  # the fixtures, reused

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
        and 0 < got["p95"] <= 0.005  # every call took well under 5 ms: the first bucket
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
    meter_calls(cb, NAME, registry, pipeline=pipeline)

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
