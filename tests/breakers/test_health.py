"""Breaker health at scrape time (``fluxgate_stream.health``): real breakers, real transitions.

Every scenario drives a real breaker (fluxgate's ``CircuitBreaker`` and ``AsyncCircuitBreaker``,
and our ``AnyioCircuitBreaker``) through real calls and transitions, and compares every health
sample of its circuit with what fluxgate's semantics say it must be, absent samples included.
"""

from __future__ import annotations

import doctest
import gc
import inspect
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pytest
from fluxgate import AsyncCircuitBreaker, CallNotPermittedError, CircuitBreaker
from fluxgate.circuitbreaker import CircuitBreakerInfo
from fluxgate.metric import Metric
from fluxgate.permits import All
from fluxgate.retries import Always
from fluxgate.trippers import Closed, FailureRate, HalfOpened, MinRequests, SlowRate
from fluxgate.windows import CountWindow
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fluxgate_stream import health
from fluxgate_stream.anyio_breaker import AnyioCircuitBreaker
from fluxgate_stream.health import (
    MULTIPROCESS_MESSAGE,
    HealthCollector,
    collector_for,
    watch,
)

from ..support.processes import run_multiprocess_worker

BUFFERED = "circuit_breaker_buffered_calls"
FAILURE = "circuit_breaker_failure_rate_ratio"
SLOW_CALLS = "circuit_breaker_slow_calls"
SLOW_RATE = "circuit_breaker_slow_call_rate_ratio"
LATENCY = "circuit_breaker_average_latency_seconds"
REOPENS = "circuit_breaker_consecutive_reopens"
CHANGED = "circuit_breaker_last_transition_timestamp_seconds"

SLOW = 0.05  # a "slow" call busy-waits this long; every other call takes microseconds
LONG = 60.0  # no call is ever this slow: its slow-call rate is a measured 0
LABELS = ("0.05", "60.0")  # their threshold_seconds label values


class Boom(Exception):
    """The failure of a protected call."""


def busy(seconds: float) -> None:
    """Take at least ``seconds`` of wall time without sleeping."""
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        pass


def ok() -> str:
    return "ok"


def slow() -> str:
    busy(SLOW)
    return "slow"


def fail() -> None:
    raise Boom


CALLS: dict[str, Callable[[], object]] = {"ok": ok, "slow": slow, "fail": fail}


def settings() -> dict[str, Any]:
    """Trips on 4 calls at >= 50 % failures (or 90 % slow); a failed probe reopens at once."""
    return {
        "window": CountWindow(4),
        "tripper": (
            Closed()
            & MinRequests(4)
            & (FailureRate(0.5) | SlowRate(0.9, threshold=SLOW) | SlowRate(0.9, threshold=LONG))
        )
        | (HalfOpened() & FailureRate(0.5)),
        "retry": Always(),
        "permit": All(),
    }


def make(kind: str) -> Any:
    breaker = {
        "sync": CircuitBreaker,
        "fluxgate_async": AsyncCircuitBreaker,
        "anyio": AnyioCircuitBreaker,
    }[kind]
    return breaker(**settings())


async def call(cb: Any, what: str) -> None:
    """One protected call through ``cb``; its failure and refusals are expected."""
    fn = CALLS[what]
    with suppress(Boom, CallNotPermittedError):
        if isinstance(cb, CircuitBreaker):
            cb.call(fn)
        else:

            async def afn() -> object:
                return fn()

            await cb.call(afn)


async def command(cb: Any, name: str) -> None:
    result = getattr(cb, name)()
    if inspect.isawaitable(result):
        await result


def snapshot(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    """Every sample of circuit ``name``: (sample name, other label values...) -> value."""
    out: dict[tuple[str, ...], float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.labels.get("circuit_name") != name:
                continue
            extra = tuple(v for k, v in sorted(sample.labels.items()) if k != "circuit_name")
            out[(sample.name, *extra)] = sample.value
    return out


def expected(
    cb: Any, *, ok: int, failed: int, slow: int, reopens: int
) -> dict[tuple[str, ...], float]:
    """What the health of ``cb`` must show, from counts we predict; latency and transition
    time are read from ``cb.info()`` (their exact values depend on the clock)."""
    info = cb.info()
    total = ok + failed
    out: dict[tuple[str, ...], float] = {
        (BUFFERED, "successful"): float(ok),
        (BUFFERED, "failed"): float(failed),
        (SLOW_CALLS, LABELS[0]): float(slow),
        (SLOW_CALLS, LABELS[1]): 0.0,
        (REOPENS,): float(reopens),
        (CHANGED,): info.changed_at,
    }
    if total:
        out[FAILURE,] = failed / total
        out[SLOW_RATE, LABELS[0]] = slow / total
        out[SLOW_RATE, LABELS[1]] = 0.0
        out[LATENCY,] = info.metrics.avg_duration
    return out


# (action, state afterwards, calls in the window: ok, failed, slow, reopens). An action is a
# call ("ok", "slow", "fail") or a command (a method of the breaker).
SCENARIO = [
    ("start", "closed", 0, 0, 0, 0),
    ("ok", "closed", 1, 0, 0, 0),
    ("slow", "closed", 2, 0, 1, 0),
    ("fail", "closed", 2, 1, 1, 0),
    ("fail", "open", 0, 0, 0, 0),  # 4 calls, 50 % failed: trips, the window resets
    ("fail", "open", 0, 0, 0, 1),  # a probe fails: half_open -> open, reopens 1
    ("fail", "open", 0, 0, 0, 2),
    ("ok", "closed", 0, 0, 0, 0),  # a probe succeeds: closed, reopens back to 0
    ("fail", "closed", 0, 1, 0, 0),
    ("fail", "closed", 0, 2, 0, 0),
    ("slow", "closed", 1, 2, 1, 0),
    ("fail", "open", 0, 0, 0, 0),
    ("fail", "open", 0, 0, 0, 1),
    ("reset", "closed", 0, 0, 0, 0),  # reset() also takes reopens back to 0: a gauge
    ("metrics_only", "metrics_only", 0, 0, 0, 0),
    *[("fail", "metrics_only", 0, n, 0, 0) for n in (1, 2, 3, 4)],  # 100 %, never trips
    ("ok", "metrics_only", 1, 3, 0, 0),  # the oldest failure leaves the window of 4
    ("disable", "disabled", 0, 0, 0, 0),
    ("ok", "disabled", 0, 0, 0, 0),  # not recorded
    ("force_open", "forced_open", 0, 0, 0, 0),
    ("ok", "forced_open", 0, 0, 0, 0),  # refused, not recorded
]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "fluxgate_async", "anyio"])
async def test_health_follows_a_real_breaker_through_its_transitions(anyio_backend, registry, kind):
    if kind == "fluxgate_async" and anyio_backend == "trio":
        pytest.skip("fluxgate's AsyncCircuitBreaker uses asyncio primitives: asyncio only")
    cb = make(kind)
    with watch(cb, "payment_api", registry) as handle:
        assert handle.slow_thresholds == (SLOW, LONG)
        transitions = 0
        for step, (action, state, n_ok, n_failed, n_slow, n_reopens) in enumerate(SCENARIO):
            before = cb.info().changed_at
            if action in CALLS:
                await call(cb, action)
            elif action != "start":
                await command(cb, action)
            assert cb.info().state == state, (step, action)
            got = snapshot(registry, "payment_api")
            want = expected(cb, ok=n_ok, failed=n_failed, slow=n_slow, reopens=n_reopens)
            assert got == want, (step, action)
            transitions += cb.info().changed_at != before
        assert transitions >= 10  # the scenario really moved the breaker around
    assert snapshot(registry, "payment_api") == {}


@pytest.mark.anyio
async def test_failures_count_zero_seconds_in_the_average_as_in_fluxgates_avg_latency(
    anyio_backend, registry
):
    cb = make("anyio")
    watch(cb, "slow_api", registry)
    await call(cb, "slow")
    alone = registry.get_sample_value(LATENCY, {"circuit_name": "slow_api"})
    assert alone is not None
    assert alone >= SLOW
    await call(cb, "fail")
    halved = registry.get_sample_value(LATENCY, {"circuit_name": "slow_api"})
    assert halved == alone / 2
    assert registry.get_sample_value(FAILURE, {"circuit_name": "slow_api"}) == 0.5


def test_an_empty_window_exports_no_rate_no_nan_and_no_sentinel(registry):
    cb = CircuitBreaker(**settings())
    watch(cb, "idle_api", registry)
    text = generate_latest(registry).decode()
    assert "NaN" not in text
    assert "-1" not in text
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert sorted(lines[:-1]) == sorted(
        [
            'circuit_breaker_buffered_calls{circuit_name="idle_api",kind="successful"} 0.0',
            'circuit_breaker_buffered_calls{circuit_name="idle_api",kind="failed"} 0.0',
            'circuit_breaker_slow_calls{circuit_name="idle_api",threshold_seconds="0.05"} 0.0',
            'circuit_breaker_slow_calls{circuit_name="idle_api",threshold_seconds="60.0"} 0.0',
            'circuit_breaker_consecutive_reopens{circuit_name="idle_api"} 0.0',
        ]
    )
    assert lines[-1].startswith(
        'circuit_breaker_last_transition_timestamp_seconds{circuit_name="idle_api"} '
    )
    # Every family is announced even with no sample, with its type and help.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (changed,) = families[CHANGED].samples
    assert changed.value == cb.info().changed_at  # exactly: the exposition round-trips floats
    assert {name: f.type for name, f in families.items()} == {
        BUFFERED: "gauge",
        FAILURE: "gauge",
        SLOW_CALLS: "gauge",
        SLOW_RATE: "gauge",
        LATENCY: "gauge",
        REOPENS: "gauge",
        CHANGED: "gauge",
    }


def test_a_breaker_with_no_slow_rate_tripper_exports_no_threshold(registry):
    cb = CircuitBreaker()
    watch(cb, "plain", registry)
    cb.call(ok)
    got = snapshot(registry, "plain")
    assert {key[0] for key in got} == {BUFFERED, FAILURE, LATENCY, REOPENS, CHANGED}


class Fixed:
    """A breaker look-alike (a wrapper, say) whose ``info()`` answers fixed window metrics."""

    def __init__(self, slow_counts: dict[float, int], *, raises: bool = False) -> None:
        self.slow_counts = slow_counts
        self.raises = raises
        self.changed_at = 1_700_000_000.25

    def info(self) -> CircuitBreakerInfo:
        if self.raises:
            raise RuntimeError("breaker unreachable")
        metrics = Metric(
            total_count=4, total_duration=2.0, failure_count=1, slow_counts=self.slow_counts
        )
        return CircuitBreakerInfo(
            state="closed", changed_at=self.changed_at, reopens=3, metrics=metrics
        )


def test_given_thresholds_and_thresholds_only_the_window_knows_are_exported(registry):
    breaker = Fixed({0.5: 2, 7.0: 1})
    handle = watch(breaker, "wrapped", registry, slow_thresholds=iter([2, 0.5, 2.0]))
    assert handle.slow_thresholds == (0.5, 2.0)
    assert snapshot(registry, "wrapped") == {
        (BUFFERED, "successful"): 3.0,
        (BUFFERED, "failed"): 1.0,
        (FAILURE,): 0.25,
        (SLOW_CALLS, "0.5"): 2.0,
        (SLOW_CALLS, "2.0"): 0.0,
        (SLOW_CALLS, "7.0"): 1.0,  # counted by the window though not configured: shown too
        (SLOW_RATE, "0.5"): 0.5,
        (SLOW_RATE, "2.0"): 0.0,
        (SLOW_RATE, "7.0"): 0.25,
        (LATENCY,): 0.5,
        (REOPENS,): 3.0,
        (CHANGED,): 1_700_000_000.25,
    }


def test_a_look_alike_without_slow_rate_thresholds_shows_what_its_window_counted(registry):
    breaker = Fixed({0.25: 1})  # kept: the collector holds it weakly
    handle = watch(breaker, "bare", registry)
    assert handle.slow_thresholds == ()
    got = snapshot(registry, "bare")
    assert (got[SLOW_CALLS, "0.25"], got[SLOW_RATE, "0.25"]) == (1.0, 0.25)


# -- zero cost per call ---------------------------------------------------------------------------


class CountingBreaker(CircuitBreaker):
    """A real ``CircuitBreaker`` that counts how often its ``info()`` is read."""

    def __init__(self) -> None:
        super().__init__(**settings())
        self.reads = 0

    def info(self) -> CircuitBreakerInfo:
        self.reads += 1
        return super().info()


def test_calls_cost_nothing_the_breaker_is_only_read_when_scraped(registry):
    cb = CountingBreaker()
    listeners = cb._listeners
    watch(cb, "counted", registry)
    assert cb.reads == 1  # watch() checks that info() answers
    assert cb._listeners is listeners  # nothing added to the breaker
    for _ in range(100):
        cb.call(ok)
    assert cb.reads == 1
    generate_latest(registry)
    assert cb.reads == 2
    generate_latest(registry)
    assert cb.reads == 3


# -- lifecycle ------------------------------------------------------------------------------------


def test_close_drops_the_series_is_idempotent_and_frees_the_name(registry):
    cb = CircuitBreaker(**settings())
    handle = watch(cb, "payment_api", registry)
    assert handle.active
    assert handle.breaker is cb
    assert repr(handle) == "<HealthWatch 'payment_api' active>"
    assert snapshot(registry, "payment_api")
    handle.close()
    handle.close()
    assert not handle.active
    assert repr(handle) == "<HealthWatch 'payment_api' closed>"
    assert snapshot(registry, "payment_api") == {}
    again = watch(cb, "payment_api", registry)
    handle.close()  # a stale handle does not end the newer watch of its name
    assert again.active
    assert snapshot(registry, "payment_api")


def test_a_duplicate_name_is_refused_on_one_registry_only(registry):
    first, second = CircuitBreaker(), CircuitBreaker()
    watch(first, "payment_api", registry)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "circuit_name 'payment_api' is already watched on this registry; "
            "close() its handle first"
        ),
    ):
        watch(second, "payment_api", registry)
    other = CollectorRegistry()
    watch(second, "payment_api", other)
    assert snapshot(other, "payment_api")


def test_a_garbage_collected_breaker_disappears_and_is_not_kept(registry):
    cb = CircuitBreaker(**settings())
    handle = watch(cb, "ephemeral", registry)
    collector = collector_for(registry)
    ref = weakref.ref(cb)
    del cb
    gc.collect()  # fluxgate's breakers are cyclic (handlers point back at them)
    assert ref() is None  # neither the handle nor the collector kept it alive
    assert handle.breaker is None
    assert not handle.active
    assert snapshot(registry, "ephemeral") == {}
    assert collector.names() == []
    assert collector._entries == {}  # the entry itself is gone: nothing leaks
    watch(CircuitBreaker(), "ephemeral", registry).close()  # the name is free again


def test_an_old_breaker_collected_after_its_name_moved_on_leaves_the_new_watch(registry):
    old, new = CircuitBreaker(), CircuitBreaker()
    watch(old, "payment_api", registry).close()
    watch(new, "payment_api", registry)
    del old
    gc.collect()
    assert collector_for(registry).names() == ["payment_api"]
    assert snapshot(registry, "payment_api")


def test_a_look_alike_with_odd_private_thresholds_falls_back_to_its_window(registry):
    breaker = Fixed({0.25: 1})
    breaker._slow_thresholds = [1.0]  # not fluxgate's tuple: not trusted
    assert watch(breaker, "odd", registry).slow_thresholds == ()
    other = Fixed({})
    other._slow_thresholds = (2, 0.5, True, float("nan"), -1.0, "3")  # only numbers > 0 count
    assert watch(other, "other", registry).slow_thresholds == (0.5, 2.0)


def test_many_short_lived_breakers_leave_nothing_behind_even_without_scrapes(registry):
    collector = collector_for(registry)
    for i in range(200):
        watch(CircuitBreaker(), f"tenant_{i}", registry)  # dropped at once: no handle kept
    gc.collect()
    keeper = CircuitBreaker()
    watch(keeper, "keeper", registry)  # a watch prunes what the garbage collector reported
    assert list(collector._entries) == ["keeper"]
    assert not collector._dead


def test_the_gc_callback_never_takes_the_collectors_lock(registry):
    """A breaker may be collected while its collector's lock is held (any allocation can run
    the cyclic GC): the callback must not block on the lock, or the thread deadlocks."""
    collector = collector_for(registry)
    watch(CircuitBreaker(), "doomed", registry)

    def collect_while_locked() -> None:
        with collector._lock:
            gc.collect()

    thread = threading.Thread(target=collect_while_locked, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the weakref callback blocked on the collector's lock"
    assert collector.names() == []


class Stalling(Fixed):
    """A look-alike whose ``info()``, once armed, blocks until released: a slow breaker."""

    def __init__(self) -> None:
        super().__init__({})
        self.armed = False
        self.inside = threading.Event()
        self.release = threading.Event()

    def info(self) -> CircuitBreakerInfo:
        if self.armed:
            self.inside.set()
            self.release.wait(timeout=30)
        return super().info()


def test_watch_and_close_never_wait_for_a_scrape_in_progress(registry):
    stalling = Stalling()
    watch(stalling, "stalling", registry)
    stalling.armed = True
    scraped: list[bytes] = []
    scraper = threading.Thread(target=lambda: scraped.append(generate_latest(registry)))
    scraper.start()
    try:
        assert stalling.inside.wait(timeout=10)
        # The scrape is inside info() now. Watching and closing take the collector's lock:
        # they must not have to wait for the scrape.
        done = threading.Event()

        def watch_and_close() -> None:
            watch(CircuitBreaker(), "other", registry).close()
            done.set()

        threading.Thread(target=watch_and_close, daemon=True).start()
        assert done.wait(timeout=10), "watch() waited for a scrape that was calling info()"
    finally:
        stalling.release.set()
        scraper.join()
    assert b'circuit_name="stalling"' in scraped[0]


def test_scrapes_race_watches_and_closes_from_other_threads(registry):
    errors: list[BaseException] = []
    stop = threading.Event()
    breakers = [CircuitBreaker(**settings()) for _ in range(50)]
    for cb in breakers[::2]:
        cb.call(ok)

    def churn(offset: int) -> None:
        try:
            for _ in range(20):
                handles = [
                    watch(cb, f"c{offset}_{i}", registry)
                    for i, cb in enumerate(breakers[offset::2])
                ]
                for handle in handles:
                    handle.close()
        except BaseException as exc:  # noqa: BLE001  # reported on the test's thread
            errors.append(exc)

    def scrape() -> None:
        try:
            while not stop.is_set():
                text = generate_latest(registry).decode()
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        assert sample.value == sample.value  # never NaN
        except BaseException as exc:  # noqa: BLE001  # reported on the test's thread
            errors.append(exc)

    scrapers = [threading.Thread(target=scrape) for _ in range(2)]
    churners = [threading.Thread(target=churn, args=(offset,)) for offset in (0, 1)]
    for thread in scrapers + churners:
        thread.start()
    for thread in churners:
        thread.join()
    stop.set()
    for thread in scrapers:
        thread.join()
    assert errors == []
    assert collector_for(registry).names() == []


def test_a_breaker_whose_info_fails_is_left_out_and_logged_once(registry, caplog):
    broken, fine = Fixed({}), CircuitBreaker()
    watch(broken, "broken", registry)
    watch(fine, "fine", registry)
    broken.raises = True
    with caplog.at_level(logging.WARNING, logger="fluxgate_stream.health"):
        for _ in range(3):
            assert snapshot(registry, "broken") == {}
            assert snapshot(registry, "fine")  # the others are still exported
        broken.raises = False
        assert snapshot(registry, "broken")
        assert snapshot(registry, "broken")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "info() of circuit 'broken' failed; its health is left out of scrapes until it "
            "answers again",
        ),
        ("WARNING", "info() of circuit 'broken' answers again"),
    ]
    assert caplog.records[0].exc_info is not None
    assert str(caplog.records[0].exc_info[1]) == "breaker unreachable"


# -- argument errors ------------------------------------------------------------------------------


class NotCallableInfo:
    info = "closed"


class WrongInfo:
    def info(self) -> dict[str, str]:
        return {"state": "closed"}


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (
            object(),
            "breaker must be a fluxgate circuit breaker (an object with an info() method), "
            "got object",
        ),
        (
            NotCallableInfo(),
            "breaker must be a fluxgate circuit breaker (an object with an info() method), "
            "got NotCallableInfo",
        ),
        (WrongInfo(), "breaker.info() must return a fluxgate CircuitBreakerInfo, got dict"),
    ],
)
def test_a_non_breaker_is_refused_and_nothing_is_registered(breaker, message):
    registry = CollectorRegistry()
    with pytest.raises(TypeError, match=re.escape(message)):
        watch(breaker, "x", registry)
    assert list(registry.collect()) == []
    with pytest.raises(TypeError, match=re.escape(message)):
        HealthCollector().watch(breaker, "x")


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("", ValueError, "name must be a non-empty str"),
        (3, TypeError, "name must be a str, got int"),
        (None, TypeError, "name must be a str, got NoneType"),
    ],
)
def test_a_bad_name_is_refused(registry, name, error, message):
    with pytest.raises(error, match=re.escape(message)):
        watch(CircuitBreaker(), name, registry)
    assert list(registry.collect()) == []


@pytest.mark.parametrize(
    ("thresholds", "error", "message"),
    [
        (0.5, TypeError, "slow_thresholds must be an iterable of numbers, got float"),
        ("0.5", TypeError, "slow_thresholds must be an iterable of numbers, got str"),
        ([True], TypeError, "slow_thresholds must hold numbers, got bool"),
        (["1"], TypeError, "slow_thresholds must hold numbers, got str"),
        ([0], ValueError, "slow_thresholds must be positive and finite, got 0"),
        ([-1.5], ValueError, "slow_thresholds must be positive and finite, got -1.5"),
        ([float("nan")], ValueError, "slow_thresholds must be positive and finite, got nan"),
        ([float("inf")], ValueError, "slow_thresholds must be positive and finite, got inf"),
    ],
)
def test_bad_thresholds_are_refused(registry, thresholds, error, message):
    with pytest.raises(error, match=re.escape(message)):
        watch(CircuitBreaker(), "x", registry, slow_thresholds=thresholds)


# -- registries -----------------------------------------------------------------------------------


def test_one_collector_per_registry_found_again_by_later_watches(registry):
    own = HealthCollector()
    registry.register(own)
    handle = watch(CircuitBreaker(), "a", registry)
    assert handle.collector is own
    assert collector_for(registry) is own
    assert repr(own) == "<HealthCollector watching 1 breakers>"
    with pytest.raises(ValueError, match="Duplicated timeseries in CollectorRegistry"):
        registry.register(HealthCollector())


def test_a_foreign_collector_under_our_names_is_reported(registry):
    Gauge(FAILURE, "someone else's", registry=registry)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "registry already has a collector for 'circuit_breaker_failure_rate_ratio' "
            "that is not fluxgate-stream's HealthCollector"
        ),
    ):
        watch(CircuitBreaker(), "x", registry)


def test_the_default_registry_is_used_without_a_registry():
    cb = CircuitBreaker()
    try:
        with watch(cb, "test_health_default_registry"):
            cb.call(ok)
            assert (
                REGISTRY.get_sample_value(FAILURE, {"circuit_name": "test_health_default_registry"})
                == 0.0
            )
        assert REGISTRY.get_sample_value(BUFFERED, {"circuit_name": "x", "kind": "failed"}) is None
    finally:
        REGISTRY.unregister(collector_for())


# -- multiprocess mode ----------------------------------------------------------------------------


def test_watch_refuses_multiprocess_mode_and_registers_nothing(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    cb = CircuitBreaker()
    with pytest.raises(RuntimeError, match=re.escape(MULTIPROCESS_MESSAGE)):
        watch(cb, "payment_api", registry)
    assert list(registry.collect()) == []
    # The documented way out: a collector on a registry that this process alone serves.
    own = HealthCollector()
    registry.register(own)
    own.watch(cb, "payment_api")
    assert snapshot(registry, "payment_api")


def test_in_a_real_multiprocess_worker_health_never_reaches_the_merged_scrape(tmp_path):
    out = run_multiprocess_worker("health_in_a_multiprocess_worker.py", tmp_path)
    assert out["multiprocess"] is True
    assert out["error"] == MULTIPROCESS_MESSAGE
    assert "worker_requests_total 1.0" in out["merged"]
    assert "circuit_breaker" not in out["merged"]
    assert (
        'circuit_breaker_buffered_calls{circuit_name="payment_api",kind="successful"} 1.0'
        in out["own"]
    )


# -- documentation --------------------------------------------------------------------------------


def test_the_modules_examples_run():
    # Public names carry __module__ = "fluxgate_stream" (re-exported as trio and anyio do), so
    # doctest.testmod(health) would skip them: run the module's own examples and those of every
    # name it exports.
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = {test.docstring: test for test in finder.find(health, globs=dict(vars(health)))}
    for name in health.__all__:
        for test in finder.find(getattr(health, name), module=False, globs=dict(vars(health))):
            tests.setdefault(test.docstring, test)  # watch is found both ways
    for test in tests.values():
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 8
    assert result.failed == 0


def test_the_module_documents_every_metric_it_exports():
    doc = health.__doc__
    assert doc is not None
    for name, _help, labels in health.FAMILIES:
        assert f"``{name}" in doc, name
        assert "gauge" in doc
        for label in labels:
            assert label in doc, (name, label)
