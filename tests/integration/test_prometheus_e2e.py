"""End to end: real fluxgate breakers -> fluxgate-stream -> exporter -> a real Prometheus server.

A ``prometheus`` process scrapes a ``prometheus_client`` exporter every second while real
breakers (``CircuitBreaker``, ``AsyncCircuitBreaker`` on asyncio, one breaker called from worker
threads) trip, probe and recover, their listeners queued through a running ``SignalPipeline``.
Through Prometheus' HTTP API we then check that:

* every PromQL example of fluxgate's Prometheus page answers what the breakers did, both with
  the page's exact windows and with short ones, every circuit's first transitions included (the
  counters of the transitions a breaker makes on its own exist at 0 from the listener's creation);
* every query of the shipped Grafana dashboard parses and returns the expected data;
* the shipped alerting rules evaluate cleanly and put exactly the expected alerts in
  pending/firing state;
* every breaker's health (``fluxgate_stream.health.watch``), read at scrape time, reaches
  Prometheus exactly, and the README's health queries (failure rate, slow-call rate, reopens,
  time since the last transition, health joined with state) answer what the breakers did;
* every circuit's time in state (``time_in_state=True``) reaches Prometheus exactly for the
  states it has left (OPEN episodes of microseconds included), and the README's "fraction of
  time open" query answers which circuits were open, and for how much of the time.

Prometheus learns nothing between two scrapes, so the test waits on scrapes (``ScrapeWatch``),
never on the clock.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from fluxgate import AsyncCircuitBreaker, CallNotPermittedError, CircuitBreaker
from fluxgate.permits import All, Random
from fluxgate.retries import Always
from fluxgate.trippers import FailureRate, MinRequests, SlowRate
from fluxgate.windows import CountWindow
from prometheus_client import CollectorRegistry, start_http_server

from fluxgate_stream import ALL_STATES, PrometheusListener, SignalPipeline
from fluxgate_stream.anyio_breaker import AnyioCircuitBreaker
from fluxgate_stream.health import watch

from ..support.prom import (
    DEPLOY,
    PrometheusServer,
    PromQueryError,
    ScrapeWatch,
    eventually,
    require_tool,
)

pytestmark = [pytest.mark.anyio, pytest.mark.prometheus, pytest.mark.slow]

DASHBOARD = DEPLOY / "grafana" / "fluxgate-stream.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
RULES = DEPLOY / "prometheus" / "rules.yml"  # the recording rules the dashboard reads

# What the dashboard's Grafana variables stand for here: every job, instance and circuit, a
# one-minute range, and a rate window holding all of phase two however long the checks waited.
GRAFANA_VARIABLES = {
    "$job": ".*",
    "$instance": ".*",
    "$circuit": ".*",
    "$__range": "1m",
    "$__rate_interval": "5m",
}

# The circuits and the state each ends in.
FINAL_STATES = {
    "payment_api": "open",  # trips over and over: the flapping one
    "shipping_api": "open",
    "pricing_api": "closed",  # trips and recovers; called from worker threads
    "search_api": "half_open",  # its probes are never permitted
    "ledger_api": "forced_open",
    "reporting_api": "disabled",
    "ranking_api": "metrics_only",
    "inventory_api": "closed",  # never called: shown closed from its listener's creation
    "catalog_api": "closed",
    "profile_api": "closed",  # the one with calls in its window: 1 failed, 2 slow, 1 fast
}
# Circuits that tripped open: their trip rate is > 0.
TRIPPING = {"payment_api", "shipping_api", "pricing_api", "search_api"}
# ... and those that went half_open in phase two (shipping_api did in phase one only).
PROBING = {"payment_api", "pricing_api", "search_api"}
# The longest a scrape interval may be stretched by Prometheus' extrapolation, relative to what
# it counted, once a series has at least MIN_SAMPLES samples (see bounded()).
MIN_SAMPLES = 5
EXTRAPOLATION = 1 + 1.1 / (MIN_SAMPLES - 1)


class Boom(Exception):
    """The failure of a protected call."""


def _fail() -> None:
    raise Boom


def _succeed() -> None:
    return None


async def _afail() -> None:
    raise Boom


async def _asucceed() -> None:
    return None


SLOW = 0.1  # seconds: profile_api's SlowRate threshold, and how long its slow calls take


async def _aslow() -> None:
    start = time.perf_counter()
    while time.perf_counter() - start < SLOW:  # busy: the call itself is slow, nothing sleeps
        pass


@dataclass
class Breaker:
    """One real fluxgate breaker, driven the way its application would call it."""

    name: str
    breaker: CircuitBreaker | AsyncCircuitBreaker | AnyioCircuitBreaker
    in_threads: bool = False

    async def do(self, action: str) -> str:
        """Call through the breaker (``fail``/``succeed``/``slow``) or command it; return its
        state."""
        if action == "slow":
            assert isinstance(self.breaker, AnyioCircuitBreaker)
            await self.breaker.call(_aslow)
        elif action in ("fail", "succeed"):
            await self._call(succeed=action == "succeed")
        else:
            result = await self._run(getattr(self.breaker, action))
            if result is not None:
                await result
        return self.breaker.info().state

    async def _call(self, *, succeed: bool) -> None:
        with suppress(Boom, CallNotPermittedError):
            if isinstance(self.breaker, AsyncCircuitBreaker | AnyioCircuitBreaker):
                await self.breaker.call(_asucceed if succeed else _afail)
            else:
                await self._run(self.breaker.call, _succeed if succeed else _fail)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.in_threads:
            return await anyio.to_thread.run_sync(fn, *args)
        return fn(*args)


def make_breakers(
    backend: str, registry: CollectorRegistry, pipeline: SignalPipeline
) -> dict[str, Breaker]:
    """One breaker per circuit, its health watched: trips on any failure, probes on the next
    call (but profile_api, which only trips after 10 calls, has slow-call thresholds)."""

    def build(
        name: str, *, probes: bool = True, use_async: bool = False
    ) -> CircuitBreaker | AsyncCircuitBreaker:
        kind = AsyncCircuitBreaker if use_async else CircuitBreaker
        return kind(
            window=CountWindow(1),
            tripper=MinRequests(1) & FailureRate(0.5),
            retry=Always(),
            permit=All() if probes else Random(0.0),
            listeners=[PrometheusListener(name, registry, pipeline=pipeline, time_in_state=True)],
        )

    on_asyncio = backend == "asyncio"
    breakers = {
        "payment_api": Breaker("payment_api", build("payment_api")),
        "shipping_api": Breaker("shipping_api", build("shipping_api", use_async=on_asyncio)),
        "pricing_api": Breaker("pricing_api", build("pricing_api"), in_threads=True),
        "search_api": Breaker(
            "search_api", build("search_api", probes=False, use_async=on_asyncio)
        ),
    }
    breakers["profile_api"] = Breaker(
        "profile_api",
        AnyioCircuitBreaker(
            window=CountWindow(10),
            tripper=MinRequests(10)
            & (FailureRate(0.5) | SlowRate(0.9, threshold=SLOW) | SlowRate(0.9, threshold=60.0)),
            listeners=[
                PrometheusListener("profile_api", registry, pipeline=pipeline, time_in_state=True)
            ],
        ),
    )
    for name in FINAL_STATES:
        if name not in breakers:
            breakers[name] = Breaker(name, build(name, use_async=on_asyncio))
    for name, breaker in breakers.items():
        watch(breaker.breaker, name, registry)  # ends with the breaker: no handle to keep
    return breakers


# (circuit, action, state the breaker must be in afterwards)
PHASE_ONE = [
    ("payment_api", "fail", "open"),
    ("payment_api", "fail", "open"),  # probe fails: open -> half_open -> open
    ("payment_api", "succeed", "closed"),  # probe succeeds: open -> half_open -> closed
    ("shipping_api", "fail", "open"),
    ("shipping_api", "succeed", "closed"),
    ("pricing_api", "fail", "open"),
    ("pricing_api", "succeed", "closed"),
    ("search_api", "fail", "open"),
    ("search_api", "succeed", "half_open"),  # the probe is not permitted
    ("search_api", "reset", "closed"),
    ("ledger_api", "force_open", "forced_open"),
    ("reporting_api", "disable", "disabled"),
    ("ranking_api", "metrics_only", "metrics_only"),
]
PHASE_TWO = [
    *[
        ("payment_api", action, state)
        for _ in range(2)
        for action, state in (("fail", "open"), ("fail", "open"), ("succeed", "closed"))
    ],
    ("payment_api", "fail", "open"),
    ("shipping_api", "fail", "open"),
    ("pricing_api", "fail", "open"),
    ("pricing_api", "succeed", "closed"),
    ("search_api", "fail", "open"),
    ("search_api", "succeed", "half_open"),
    ("payment_api", "fail", "open"),  # its probe fails: reopened once since it last closed
    ("profile_api", "fail", "closed"),
    ("profile_api", "slow", "closed"),
    ("profile_api", "slow", "closed"),
    ("profile_api", "succeed", "closed"),
]


async def drive(breakers: dict[str, Breaker], steps: list[tuple[str, str, str]]) -> None:
    for name, action, expected in steps:
        assert await breakers[name].do(action) == expected, (name, action)


# -- reading both sides ---------------------------------------------------------------------------


def exported(registry: CollectorRegistry) -> dict[tuple[str, ...], float]:
    """The exporter's truth: every state and transition sample, keyed by its labels."""
    out: dict[tuple[str, ...], float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in ("circuit_breaker_state", "circuit_breaker_state_transition_total"):
                out[key(sample.name, sample.labels)] = sample.value
    return out


def key(name: str, labels: dict[str, str]) -> tuple[str, ...]:
    if name == "circuit_breaker_state":
        return (name, labels["circuit_name"], labels["state"])
    return (name, labels["circuit_name"], labels["old_state"], labels["new_state"])


def stored(server: PrometheusServer) -> dict[tuple[str, ...], float]:
    """What Prometheus holds now for the same series."""
    out: dict[tuple[str, ...], float] = {}
    for name in ("circuit_breaker_state", "circuit_breaker_state_transition_total"):
        for row in server.query(name):
            out[key(name, row["metric"])] = float(row["value"][1])
    return out


def by(label: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """An instant vector as {label value: sample value}; the label must be unique per row."""
    out = {row["metric"][label]: float(row["value"][1]) for row in rows}
    assert len(out) == len(rows), rows
    return out


# -- the spec page's PromQL examples --------------------------------------------------------------

OPEN_QUERIES = ['circuit_breaker_state{state="open"} == 1']
BY_STATE_QUERIES = ["sum(circuit_breaker_state) by (state)"]
TRIP_RATE_QUERIES = [
    'sum(rate(circuit_breaker_state_transition_total{new_state="open"}[5m])) by (circuit_name)',
    'sum(rate(circuit_breaker_state_transition_total{new_state="open"}[1m])) by (circuit_name)',
]
HALF_OPEN_QUERIES = [
    'increase(circuit_breaker_state_transition_total{new_state="half_open"}[1h])',
    'increase(circuit_breaker_state_transition_total{new_state="half_open"}[1m])',
]


def bounded(value: float, exact: float) -> bool:
    """Whether ``increase()`` (or ``rate()`` times its window) could have answered ``value``
    for a counter that grew by ``exact`` from a first sample of 0.

    From a first sample of 0, Prometheus does not extrapolate towards the window's start (the
    counter would go below 0), and extrapolates towards its end by at most 1.1 average scrape
    intervals: with at least ``MIN_SAMPLES`` samples, that stretches the increase by at most
    ``EXTRAPOLATION``, and never shrinks it. A counter that appears at its first count (as
    upstream's do) gives 1 less for that series.
    """
    return exact - 1e-9 <= value <= exact * EXTRAPOLATION + 1e-9


def expected_by_state() -> dict[str, float]:
    counts: dict[str, float] = dict.fromkeys(ALL_STATES, 0.0)
    for state in FINAL_STATES.values():
        counts[state] += 1
    return counts


def transitions_into(final: dict[tuple[str, ...], float], new: str) -> dict[str, float]:
    """Per circuit, the exporter's transitions into ``new`` (every circuit, 0 included)."""
    out = dict.fromkeys(FINAL_STATES, 0.0)
    for labels, value in final.items():
        if labels[0] == "circuit_breaker_state_transition_total" and labels[3] == new:
            out[labels[1]] += value
    return out


def check_spec_queries(
    server: PrometheusServer, final: dict[tuple[str, ...], float]
) -> tuple[bool, dict[str, Any]]:
    """Run every spec example; done when each answers what the breakers did, first trips
    included."""
    answers: dict[str, Any] = {}
    ok = True
    opened, probed = transitions_into(final, "open"), transitions_into(final, "half_open")
    for query in OPEN_QUERIES:
        answers[query] = got = set(by("circuit_name", server.query(query)))
        ok &= got == {name for name, state in FINAL_STATES.items() if state == "open"}
    for query in BY_STATE_QUERIES:
        answers[query] = got = by("state", server.query(query))
        ok &= got == expected_by_state()
    for query in TRIP_RATE_QUERIES:
        answers[query] = rates = by("circuit_name", server.query(query))
        # Every circuit has such series, at 0 from its listener's creation; payment_api opened
        # 8 times, the other tripping ones twice each, over the same scrapes.
        ok &= set(rates) == set(FINAL_STATES)
        ok &= {name for name, rate in rates.items() if rate > 0} == TRIPPING
        ok &= max(rates, key=rates.__getitem__) == "payment_api"
        if "[5m]" in query:  # a window that holds every sample: each trip counts, the first too
            ok &= all(bounded(rates[name] * 300, opened[name]) for name in FINAL_STATES)
    for query in HALF_OPEN_QUERIES:
        rows = server.query(query)
        answers[query] = increases = by("circuit_name", rows)
        ok &= {row["metric"]["old_state"] for row in rows} == {"open"}
        ok &= set(increases) == set(FINAL_STATES)
        if "[1h]" in query:  # shipping_api's phase-one probe included
            ok &= all(bounded(increases[name], probed[name]) for name in FINAL_STATES)
            ok &= {name for name, value in increases.items() if value > 0} == {
                *PROBING,
                "shipping_api",
            }
        else:  # the last minute: phase two's probes at least
            ok &= {name for name, value in increases.items() if value > 0} >= PROBING
    return ok, answers


# -- breaker health at scrape time ---------------------------------------------------------------

HEALTH_METRICS = (
    "circuit_breaker_buffered_calls",
    "circuit_breaker_failure_rate_ratio",
    "circuit_breaker_slow_calls",
    "circuit_breaker_slow_call_rate_ratio",
    "circuit_breaker_average_latency_seconds",
    "circuit_breaker_consecutive_reopens",
    "circuit_breaker_last_transition_timestamp_seconds",
)
# The README's health queries.
FAILURE_RATE = "circuit_breaker_failure_rate_ratio"
FAILING_WHILE_CLOSED = (
    "circuit_breaker_failure_rate_ratio > 0.2"
    ' and on (circuit_name) circuit_breaker_state{state="closed"} == 1'
)
SLOW_CALL_RATE = "circuit_breaker_slow_call_rate_ratio"
WINDOW_CALLS = "sum by (circuit_name) (circuit_breaker_buffered_calls)"
REOPENED = "circuit_breaker_consecutive_reopens > 0"
SINCE_TRANSITION = "time() - circuit_breaker_last_transition_timestamp_seconds"


def health_key(name: str, labels: dict[str, str]) -> tuple[str, ...]:
    """A health sample's identity: its name and labels, minus those Prometheus adds."""
    skip = ("__name__", "job", "instance")
    return (name, *(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip))


def health_exported(registry: CollectorRegistry) -> dict[tuple[str, ...], float]:
    """The exporter's truth: every health sample, as a scrape reads it now."""
    return {
        health_key(sample.name, sample.labels): sample.value
        for family in registry.collect()
        if family.name in HEALTH_METRICS
        for sample in family.samples
    }


def health_stored(server: PrometheusServer) -> dict[tuple[str, ...], float]:
    """What Prometheus holds now for the same series."""
    return {
        health_key(name, row["metric"]): float(row["value"][1])
        for name in HEALTH_METRICS
        for row in server.query(name)
    }


def check_health_queries(
    server: PrometheusServer, breakers: dict[str, Breaker]
) -> tuple[bool, dict[str, Any]]:
    """Run the README's health queries; done when each answers what the breakers did."""
    answers: dict[str, Any] = {}
    ok = True
    for query in (FAILURE_RATE, FAILING_WHILE_CLOSED):
        # Only profile_api has calls in its window: every other window is empty (reset by the
        # circuit's last transition, or never used), so it has no failure rate at all.
        answers[query] = got = by("circuit_name", server.query(query))
        ok &= got == {"profile_api": 0.25}
    answers[SLOW_CALL_RATE] = slow = {
        (row["metric"]["circuit_name"], row["metric"]["threshold_seconds"]): float(row["value"][1])
        for row in server.query(SLOW_CALL_RATE)
    }
    ok &= slow == {("profile_api", "0.1"): 0.5, ("profile_api", "60.0"): 0.0}
    answers[WINDOW_CALLS] = calls = by("circuit_name", server.query(WINDOW_CALLS))
    ok &= calls == {name: 4.0 if name == "profile_api" else 0.0 for name in FINAL_STATES}
    answers[REOPENED] = reopened = by("circuit_name", server.query(REOPENED))
    ok &= reopened == {"payment_api": 1.0}
    before = time.time()
    answers[SINCE_TRANSITION] = since = by("circuit_name", server.query(SINCE_TRANSITION))
    after = time.time()
    ok &= set(since) == set(FINAL_STATES)
    for name, seconds in since.items():
        changed_at = breakers[name].breaker.info().changed_at
        # Prometheus evaluates time() at the query's time, in milliseconds.
        ok &= before - changed_at - 0.01 <= seconds <= after - changed_at + 0.01
    return ok, answers


# -- time in state ---------------------------------------------------------------------------------

SECONDS = "circuit_breaker_state_seconds_total"
# The README's query: the fraction of the window each circuit spent open. The window must hold
# phase two's microsecond opens however long the checks before this one waited.
TIME_OPEN = 'rate(circuit_breaker_state_seconds_total{state="open"}[5m])'
# Over a window that Prometheus' data covers whole (rate() divides by the window's length).
TIME_FORCED_OPEN = 'rate(circuit_breaker_state_seconds_total{state="forced_open"}[10s])'


def seconds_exported(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """One scrape's time-in-state samples, by (circuit, state)."""
    return {
        (sample.labels["circuit_name"], sample.labels["state"]): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == SECONDS
    }


def check_time_in_state(
    server: PrometheusServer, registry: CollectorRegistry
) -> tuple[bool, dict[str, Any]]:
    """Prometheus holds every closed interval exactly; the fraction-open query is right."""
    stored = {
        (row["metric"]["circuit_name"], row["metric"]["state"]): float(row["value"][1])
        for row in server.query(SECONDS)
    }
    exported = seconds_exported(registry)  # after Prometheus' samples: never less than them
    answers: dict[str, Any] = {SECONDS: stored}
    ok = set(stored) == {(name, state) for name in FINAL_STATES for state in ALL_STATES}
    ok &= set(exported) == set(stored)
    if not ok:  # not all there yet: no lookups that could fail
        return False, answers
    for (name, state), value in stored.items():
        if state == FINAL_STATES[name]:  # still accruing: up to the last scrape
            ok &= 0 < value <= exported[name, state]
        else:  # left for good: Prometheus holds exactly the sum of the intervals
            ok &= value == exported[name, state]
    answers[TIME_OPEN] = fraction = by("circuit_name", server.query(TIME_OPEN))
    ok &= set(fraction) == set(FINAL_STATES)
    # Open at some point of the window: the four that tripped in phase two; pricing_api's and
    # search_api's opens lasted microseconds, far shorter than the 1 s scrape interval.
    ok &= {name for name, value in fraction.items() if value > 0} == TRIPPING
    ok &= all(fraction.get(name, 1.0) < 0.01 for name in ("pricing_api", "search_api"))
    ok &= all(0 < fraction.get(name, 0.0) <= 1.05 for name in ("payment_api", "shipping_api"))
    answers[TIME_FORCED_OPEN] = forced = by("circuit_name", server.query(TIME_FORCED_OPEN))
    # forced open since phase one, before Prometheus first saw it: all of the time
    ok &= 0.95 <= forced.get("ledger_api", 0.0) <= 1.05
    ok &= all(value == 0 for name, value in forced.items() if name != "ledger_api")
    return ok, answers


# -- the dashboard's queries ----------------------------------------------------------------------


def dashboard_targets() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (panel title, Prometheus target) of the dashboard, rows' nested panels included."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = list(board["panels"])
    for panel in board["panels"]:
        panels.extend(panel.get("panels", []))
    for panel in panels:
        for target in panel.get("targets", []):
            yield panel["title"], target


#: The dashboard's row of call panels (meter_calls), which test_calls_e2e.py checks against
#: metered breakers; this test checks every other panel.
CALLS_ROW = "Calls: $circuit"


def row_titles() -> dict[str, str]:
    """Every panel's title -> the title of the row it sits under."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rows: dict[str, str] = {}
    row = ""
    for panel in board["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
        else:
            rows[panel["title"]] = row
    return rows


def grafana_to_promql(expr: str) -> str:
    """Replace the dashboard's Grafana variables; no variable may be left over."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def last_values(rows: list[dict[str, Any]], label: str) -> dict[str, float]:
    """A range query's last point per series, keyed by ``label``."""
    return {row["metric"].get(label, ""): float(row["values"][-1][1]) for row in rows}


def timeline_ranks() -> dict[str, float]:
    """The state timeline's value mapping, from the dashboard: {state: the rank it shows}."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (timeline,) = [p for p in board["panels"] if p["title"] == "Circuit state timeline"]
    (mapping,) = timeline["fieldConfig"]["defaults"]["mappings"]
    return {m["text"]: float(rank) for rank, m in mapping["options"].items()}


def current_shares(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """The share panel's series at the range's last step, by (circuit, state): a state the
    circuit left earlier in the range ends before it (the query drops shares of 0)."""
    last = max(row["values"][-1][0] for row in rows)
    return {
        (row["metric"]["circuit_name"], row["metric"]["state"]): float(row["values"][-1][1])
        for row in rows
        if row["values"][-1][0] == last
    }


def check_dashboard(server: PrometheusServer) -> tuple[bool, dict[str, Any]]:
    """Run every dashboard query as Grafana would (instant or range); check what it shows."""
    answers: dict[str, Any] = {}
    ok = True
    rows = row_titles()
    targets = [(t, target) for t, target in dashboard_targets() if rows[t] != CALLS_ROW]
    assert len(targets) == 12, targets  # a new panel outside the calls row must be checked here
    for title, target in targets:
        expr = grafana_to_promql(target["expr"])
        if target.get("instant"):
            rows = server.query(expr)
            answers[title] = {
                tuple(sorted(row["metric"].items())): float(row["value"][1]) for row in rows
            }
        else:
            rows = server.query_range(expr)
            ok &= all(row["values"] for row in rows)
            answers[title] = last_values(rows, "circuit_name")
            if title == "Share of processes in each state" and rows:
                answers[title] = current_shares(rows)
            if title == "Slow-call rate (window)":  # one series per circuit and threshold
                answers[title] = {
                    (row["metric"]["circuit_name"], row["metric"]["threshold_seconds"]): float(
                        row["values"][-1][1]
                    )
                    for row in rows
                }
        ok &= bool(rows)  # parses (or api() raised) and returns data
    ok &= answers["Currently Open Circuits"] == {"": 2.0}
    ranks = timeline_ranks()
    assert set(ranks) == set(ALL_STATES)
    ok &= answers["Circuit state timeline"] == {
        name: ranks[state] for name, state in FINAL_STATES.items()
    }
    # One process: its state's share is 1, the other states' 0 (left out).
    ok &= answers["Share of processes in each state"] == dict.fromkeys(FINAL_STATES.items(), 1.0)
    trip_rates = answers["Circuit Trip Rate"]
    ok &= set(trip_rates) == set(FINAL_STATES)
    ok &= {name for name, rate in trip_rates.items() if rate > 0} == TRIPPING
    pie = {
        dict(labels)["state"]: value for labels, value in answers["Circuit State Overview"].items()
    }
    ok &= pie == expected_by_state()
    table = {
        (labels["circuit_name"], labels["old_state"], labels["new_state"])
        for labels in map(dict, answers["State transitions in the time range"])
    }
    # Every transition a breaker made on its own, the first of each kind too; the commands
    # (force_open, disable, metrics_only) have no series before they happen, so no increase.
    ok &= table == {
        ("payment_api", "closed", "open"),
        ("payment_api", "open", "half_open"),
        ("payment_api", "half_open", "open"),
        ("payment_api", "half_open", "closed"),
        ("shipping_api", "closed", "open"),
        ("shipping_api", "open", "half_open"),
        ("shipping_api", "half_open", "closed"),
        ("pricing_api", "closed", "open"),
        ("pricing_api", "open", "half_open"),
        ("pricing_api", "half_open", "closed"),
        ("search_api", "closed", "open"),
        ("search_api", "open", "half_open"),
        ("search_api", "half_open", "closed"),  # reset() from half_open
    }
    # Health panels. Over the last minute, only profile_api has had calls in its window (bar a
    # transient sample, should a scrape fall between a probe's record and its transition).
    failure = answers["Failure rate (window)"]
    ok &= failure.get("profile_api") == 0.25 and set(failure) <= set(FINAL_STATES)
    slow = answers["Slow-call rate (window)"]
    ok &= {key: value for key, value in slow.items() if key[0] == "profile_api"} == {
        ("profile_api", "0.1"): 0.5,
        ("profile_api", "60.0"): 0.0,
    }
    latency = answers["Average call latency (window)"]
    # Two calls of at least SLOW seconds, one fast, one failure counting 0 s: over 4 calls.
    ok &= latency.get("profile_api", 0.0) >= 2 * SLOW / 4
    since = {
        dict(labels)["circuit_name"]: v
        for labels, v in answers["Time since the last transition"].items()
    }
    ok &= set(since) == set(FINAL_STATES) and all(v >= 0 for v in since.values())
    # Time in state panels: every circuit that tripped spent a share of the 5 minutes open.
    time_open = answers["Fraction of time open"]
    ok &= set(time_open) == set(FINAL_STATES)
    ok &= {name for name, value in time_open.items() if value > 0} == TRIPPING
    in_state = {
        (dict(labels)["circuit_name"], dict(labels)["state"])
        for labels in answers["Time in each state over the time range"]
    }
    ok &= set(FINAL_STATES.items()) <= in_state
    ok &= {name for name, _ in in_state} == set(FINAL_STATES)
    return ok, answers


def check_dashboard_variables(
    server: PrometheusServer, target: str
) -> tuple[bool, dict[str, list[str]]]:
    """The job, instance and circuit variables' ``label_values(selector, label)``, each
    selector's variables substituted, as Grafana asks for them."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = {v["name"]: v["query"] for v in board["templating"]["list"] if v["type"] == "query"}
    assert list(queries) == ["job", "instance", "circuit"], queries
    values: dict[str, list[str]] = {}
    for name, query in queries.items():
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert match is not None, query
        selector, label = match.groups()
        values[name] = sorted(
            server.api(f"label/{label}/values", **{"match[]": grafana_to_promql(selector)})
        )
    expected = {"job": ["fluxgate-stream"], "instance": [target], "circuit": sorted(FINAL_STATES)}
    return values == expected, values


# -- the alerting rules ---------------------------------------------------------------------------

EXPECTED_ALERTS = {
    ("CircuitBreakerOpen", "payment_api", "pending"),
    ("CircuitBreakerOpen", "shipping_api", "pending"),
    ("CircuitBreakerOpen", "search_api", "pending"),  # half_open counts as not recovered
    ("CircuitBreakerForcedOpen", "ledger_api", "pending"),
    ("CircuitBreakerHalfOpenStuck", "search_api", "pending"),
    ("CircuitBreakerProtectionOff", "reporting_api", "pending"),
    ("CircuitBreakerProtectionOff", "ranking_api", "pending"),
    ("CircuitBreakerFlapping", "payment_api", "firing"),  # 8 trips, the others 2; no `for`
}


def check_alerts(server: PrometheusServer) -> tuple[bool, Any]:
    groups = server.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    kinds = sorted(rule["type"] for rule in rules)
    raised = server.api("alerts")["alerts"]
    alerts = {(a["labels"]["alertname"], a["labels"]["circuit_name"], a["state"]) for a in raised}
    # One process: every alert's value, the share of processes in the state, is 1 (100%).
    shares = {
        float(a["value"]) for a in raised if a["labels"]["alertname"] != "CircuitBreakerFlapping"
    }
    runbooks = all(a["annotations"].get("runbook_url") for a in raised)
    done = kinds == ["alerting"] * 7 + ["recording"] * 5 and not unhealthy
    done &= alerts == EXPECTED_ALERTS and shares == {1.0} and runbooks
    return done, {"unhealthy": unhealthy, "alerts": sorted(alerts), "shares": sorted(shares)}


def sampled(server: PrometheusServer, samples: int) -> tuple[bool, dict[str, float]]:
    """Whether every transition counter Prometheus holds has at least ``samples`` samples."""
    rows = server.query("count_over_time(circuit_breaker_state_transition_total[1h])")
    got = {"/".join(row["metric"].values()): float(row["value"][1]) for row in rows}
    return bool(got) and min(got.values()) >= samples, got


# -- the test -------------------------------------------------------------------------------------


@dataclass
class Exporter:
    target: str
    watch: ScrapeWatch


@pytest.fixture
def exporter(registry: CollectorRegistry) -> Iterator[Exporter]:
    """``prometheus_client``'s own HTTP server on an ephemeral port, serving ``registry``."""
    watch = ScrapeWatch()
    registry.register(watch)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield Exporter(f"127.0.0.1:{server.server_port}", watch)
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def prometheus(tmp_path, exporter: Exporter) -> Iterator[PrometheusServer]:
    """A real ``prometheus`` scraping the exporter every second, with the shipped alerting
    and recording rules."""
    server = PrometheusServer(
        require_tool("prometheus"), tmp_path, [exporter.target], [ALERTS, RULES]
    )
    server.start()
    yield server
    server.stop()


async def test_real_prometheus_answers_the_spec_dashboard_and_alert_queries(
    anyio_backend, registry, exporter, prometheus
):
    server, watch = prometheus, exporter.watch

    async def until(probe: Callable[[], tuple[bool, Any]], what: str, within: float = 30.0) -> Any:
        return await eventually(server, watch, probe, what=what, within=within)

    def matches(expected: dict[tuple[str, ...], float]) -> Callable[[], tuple[bool, Any]]:
        def probe() -> tuple[bool, Any]:
            got = stored(server)
            return got == expected, got

        return probe

    pipeline = SignalPipeline()
    breakers = make_breakers(anyio_backend, registry, pipeline)
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)

        # The listeners created every circuit's gauge and its own transitions' counters at 0.
        # Prometheus holds them (MIN_SAMPLES times, for bounded()) before any breaker moves: no
        # other waiting, every transition is an increment, each circuit's first included.
        first = exported(registry)
        assert set(first.values()) == {0.0, 1.0}
        await until(matches(first), "every circuit's series before any transition")
        await until(lambda: sampled(server, MIN_SAMPLES), f"{MIN_SAMPLES} samples of the zeros")

        await drive(breakers, PHASE_ONE)
        await drive(breakers, PHASE_TWO)
        await pipeline.flush()
        final = exported(registry)
        assert final["circuit_breaker_state_transition_total", "payment_api", "closed", "open"] == 4
        await until(matches(final), "the exporter's series after both phases")
        # First the queries over [1m] windows (the spec's trip and half-open rates, the
        # dashboard's $__range of 1m): phase one's transitions must still be inside them.
        await until(lambda: check_spec_queries(server, final), "the spec page's PromQL answers")
        await until(lambda: check_dashboard(server), "the dashboard's panels")

        # Health is read at scrape time: with no more calls, what a scrape reads now is what
        # Prometheus must end up holding, float for float.
        health = health_exported(registry)
        assert health["circuit_breaker_failure_rate_ratio", "circuit_name=profile_api"] == 0.25

        def health_matches() -> tuple[bool, Any]:
            got = health_stored(server)
            return got == health, got

        await until(health_matches, "every breaker's health")
        await until(lambda: check_health_queries(server, breakers), "the README's health queries")

        await until(lambda: check_time_in_state(server, registry), "every circuit's time in state")
        await until(
            lambda: check_dashboard_variables(server, exporter.target), "the dashboard's variables"
        )
        await until(lambda: check_alerts(server), "the expected alerts")

        tg.cancel_scope.cancel()


async def test_a_query_prometheus_rejects_is_reported(anyio_backend, exporter, prometheus):
    """The helper the checks above rely on does not mistake an error for an empty answer."""

    def probe() -> tuple[bool, str]:
        try:
            prometheus.query("sum(rate(circuit_breaker_state_transition_total[5m])")
        except PromQueryError as error:
            return True, str(error)
        return False, "no error"

    message = await eventually(prometheus, exporter.watch, probe, what="a parse error")
    assert message == (
        'bad_data: invalid parameter "query": 1:53: parse error: unclosed left parenthesis'
    )


async def test_one_trip_of_a_fresh_circuit_is_an_increase_of_one(
    anyio_backend, registry, exporter, prometheus
):
    """The spec's trip-rate and increase queries count a circuit's very first trip.

    Upstream's counter appears at 1 on the first trip, so ``increase()`` answers 0 for it for
    ever; ours exists at 0 from the listener's creation.
    """
    server, watch = prometheus, exporter.watch
    pipeline = SignalPipeline()
    breaker = CircuitBreaker(
        window=CountWindow(1),
        tripper=MinRequests(1) & FailureRate(0.5),
        retry=Always(),
        listeners=[PrometheusListener("fresh_api", registry, pipeline=pipeline)],
    )
    series = '{circuit_name="fresh_api",old_state="closed",new_state="open"}'
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)

        # The listener created the circuit's gauge and its counters at 0 together: once
        # Prometheus holds MIN_SAMPLES samples of the gauge, it holds as many of the zero (which
        # bounded() needs). On upstream's series there is no zero, and the increase below is 0.
        def listener_seen() -> tuple[bool, Any]:
            gauge = '{circuit_name="fresh_api",state="closed"}'
            rows = server.query(f"count_over_time(circuit_breaker_state{gauge}[1m])")
            values = [float(row["value"][1]) for row in rows]
            return values != [] and values[0] >= MIN_SAMPLES, values

        await eventually(server, watch, listener_seen, what=f"{MIN_SAMPLES} samples of the gauge")

        await Breaker("fresh_api", breaker).do("fail")
        assert breaker.info().state == "open"
        await pipeline.flush()

        def counted() -> tuple[bool, Any]:
            # First whether Prometheus holds the trip; the queries after it then see it too
            # (asked the other way round, a scrape could land between them).
            stored = server.query(f"circuit_breaker_state_transition_total{series}")
            if not (stored and stored[0]["value"][1] == "1"):
                return False, stored
            increases = {
                row["metric"]["old_state"]: float(row["value"][1])
                for row in server.query(
                    'increase(circuit_breaker_state_transition_total{new_state="open"}[1m])'
                )
            }
            rates = by(
                "circuit_name",
                server.query(TRIP_RATE_QUERIES[0]),  # the spec's own query, over 5 minutes
            )
            return True, (increases, rates)

        increases, rates = await eventually(server, watch, counted, what="the trip")
        assert set(increases) == {"closed", "half_open"}, increases
        assert bounded(increases["closed"], 1.0), increases  # 0 on upstream's series
        assert increases["half_open"] == 0.0
        assert bounded(rates["fresh_api"] * 300, 1.0), rates
        tg.cancel_scope.cancel()
