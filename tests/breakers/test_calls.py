"""meter_calls(): every call through a breaker, by kind, and its duration; exact on every path."""

from __future__ import annotations

import contextlib
import math
import traceback
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fluxgate import AsyncCircuitBreaker, CircuitBreaker
from fluxgate.errors import CallNotPermittedError
from fluxgate.permits import All as AllowAll
from fluxgate.retries import Always
from fluxgate.trackers import Custom, TypeOf
from fluxgate.trippers import (
    AvgLatency,
    CallContext,
    FailureRate,
    FailureStreak,
    MinRequests,
    Tripper,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from fluxgate_stream import (
    AnyioCircuitBreaker,
    CallMeter,
    CircuitLimitError,
    PrometheusListener,
    SignalPipeline,
    ThreadSafeCircuitBreaker,
    limit_circuits,
    meter_calls,
)
from fluxgate_stream._apply import SEQUENCE, Tally, apply
from fluxgate_stream._catalogue import (
    CALL_DURATION,
    CALL_DURATION_KINDS,
    CALL_KINDS,
    CALLS,
    SHADOW_TRIPS,
    TRIP_REASONS,
    TRIPS,
)
from fluxgate_stream.calls import DEFAULT_BUCKETS

from ..support.helpers import Abort, Consumer, in_thread

NAME = "payment_api"
NEVER_TRIPS = MinRequests(10**9) & FailureRate(0.5)


def calls(registry: CollectorRegistry, name: str = NAME) -> dict[str, float | None]:
    """``circuit_breaker_calls_total`` by kind (None where absent)."""
    return {
        kind: registry.get_sample_value(CALLS.sample, {"circuit_name": name, "kind": kind})
        for kind in CALL_KINDS
    }


def timed(registry: CollectorRegistry, name: str = NAME) -> dict[str, float | None]:
    """``circuit_breaker_call_duration_seconds_count`` by kind (None where absent)."""
    return {
        kind: registry.get_sample_value(
            f"{CALL_DURATION.name}_count", {"circuit_name": name, "kind": kind}
        )
        for kind in CALL_DURATION_KINDS
    }


def counted(**kinds: float) -> dict[str, float]:
    return {kind: float(kinds.get(kind, 0)) for kind in CALL_KINDS}


def ok() -> str:
    return "ok"


def fail() -> None:
    raise ValueError("counted")


def ignore() -> None:
    raise KeyError("not counted")


async def aok() -> str:
    return "ok"


async def afail() -> None:
    raise ValueError("counted")


async def aignore() -> None:
    raise KeyError("not counted")


# -- sync breakers: fluxgate's CircuitBreaker and ThreadSafeCircuitBreaker ----------------------

SYNC_BREAKERS = [CircuitBreaker, ThreadSafeCircuitBreaker]


def fallback(_error: Exception) -> str:
    return "fallback"


def ways(cb: Any) -> list[Callable[[Callable[[], Any]], Any]]:
    """Every way of calling a breaker, each taking the protected function (awaitable for an
    async breaker: the call then returns what to await)."""
    return [
        cb.call,
        lambda f: cb(f)(),
        lambda f: cb(fallback=fallback)(f)(),
        lambda f: cb.call_with_fallback(f, fallback),
    ]


@pytest.mark.parametrize("kind", SYNC_BREAKERS)
@pytest.mark.parametrize("way", range(4))
def test_every_way_of_calling_a_sync_breaker_is_counted_by_kind(registry, kind, way):
    cb = kind(tracker=TypeOf(ValueError), tripper=NEVER_TRIPS)
    meter_calls(cb, NAME, registry)
    call = ways(cb)[way]
    fallback = way >= 2
    assert call(ok) == "ok"
    for function, error in ((fail, ValueError), (ignore, KeyError)):
        if fallback:
            assert call(function) == "fallback"
        else:
            with pytest.raises(error):
                call(function)
    cb.force_open()
    if fallback:
        assert call(ok) == "fallback"
    else:
        with pytest.raises(CallNotPermittedError):
            call(ok)
    assert calls(registry) == counted(successful=1, failed=1, ignored=1, not_permitted=1)
    assert timed(registry) == {"successful": 1.0, "failed": 1.0, "ignored": 1.0}


@pytest.mark.parametrize("kind", SYNC_BREAKERS)
def test_series_exist_at_zero_from_the_start_and_go_with_close(registry, kind):
    cb = kind()
    meter = meter_calls(cb, NAME, registry)
    assert isinstance(meter, CallMeter)
    assert calls(registry) == counted()
    assert timed(registry) == dict.fromkeys(CALL_DURATION_KINDS, 0.0)
    meter.close()
    meter.close()  # idempotent
    assert not meter.active
    assert calls(registry) == dict.fromkeys(CALL_KINDS, None)
    cb.call(ok)  # no longer metered
    assert calls(registry) == dict.fromkeys(CALL_KINDS, None)
    with meter_calls(cb, NAME, registry):  # metered again, from 0
        cb.call(ok)
        assert calls(registry) == counted(successful=1)
    assert calls(registry) == dict.fromkeys(CALL_KINDS, None)


def test_open_and_half_open_refusals_are_not_permitted_and_a_probe_counts_once(registry):
    cb = CircuitBreaker(
        tripper=MinRequests(1) & FailureRate(0.5), retry=Always(), permit=AllowAll()
    )
    meter_calls(cb, NAME, registry)
    with pytest.raises(ValueError, match="counted"):
        cb.call(fail)  # trips
    assert cb.info().state == "open"
    assert cb.call(ok) == "ok"  # open -> half_open -> the probe runs (one call, counted once)
    assert calls(registry) == counted(successful=1, failed=1)


def test_the_metered_breaker_raises_the_same_exception_object_with_its_frames(registry):
    cb = CircuitBreaker(tripper=NEVER_TRIPS)
    raised: list[BaseException] = []

    def boom() -> None:
        error = RuntimeError("boom")
        raised.append(error)
        raise error

    meter_calls(cb, NAME, registry)
    with pytest.raises(RuntimeError) as info:
        cb.call(boom)
    assert info.value is raised[0]
    assert info.value.__context__ is None
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "boom"
    assert "call" in frames


def test_a_tracker_is_asked_once_per_failure_and_its_answer_is_the_kind(registry):
    asked: list[Exception] = []

    def tracked(error: Exception) -> bool:
        asked.append(error)
        return isinstance(error, ValueError)

    cb = CircuitBreaker(tracker=Custom(tracked), tripper=NEVER_TRIPS)
    meter_calls(cb, NAME, registry)
    for function in (fail, ignore, fail):
        with pytest.raises(Exception):  # noqa: B017, PT011  # either error
            cb.call(function)
    assert len(asked) == 3
    assert calls(registry) == counted(failed=2, ignored=1)


def test_disabled_breakers_exceptions_are_ignored_and_keyboard_interrupt_cancelled(registry):
    cb = CircuitBreaker(tracker=TypeOf(ValueError), tripper=NEVER_TRIPS)
    meter_calls(cb, NAME, registry)
    cb.disable()
    with pytest.raises(ValueError, match="counted"):
        cb.call(fail)  # the breaker asks no tracker when disabled
    assert cb.call(ok) == "ok"
    cb.reset()

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cb.call(interrupt)
    assert calls(registry) == counted(successful=1, ignored=1, cancelled=1)


def test_meter_calls_checks_its_arguments(registry):
    cb = CircuitBreaker()
    with pytest.raises(TypeError, match="name must be a str, got int"):
        meter_calls(cb, 1, registry)  # type: ignore[arg-type]  # the wrong type, on purpose
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        meter_calls(cb, "", registry)
    with pytest.raises(TypeError, match="registry must be"):
        meter_calls(cb, NAME, object())  # type: ignore[arg-type]  # as above
    with pytest.raises(TypeError, match="pipeline must be"):
        meter_calls(cb, NAME, registry, pipeline=object())  # type: ignore[arg-type]  # as above
    with pytest.raises(TypeError, match="breaker must be a fluxgate CircuitBreaker"):
        meter_calls(object(), NAME, registry)
    with pytest.raises(TypeError, match="buckets must be an iterable of numbers, got str"):
        meter_calls(cb, NAME, registry, buckets="1")  # type: ignore[arg-type]  # as above
    with pytest.raises(
        ValueError, match=r"buckets must be strictly increasing, got 1\.0 after 2\.0"
    ):
        meter_calls(cb, NAME, registry, buckets=[2, 1])
    with pytest.raises(ValueError, match="buckets must be above 0, got 0"):
        meter_calls(cb, NAME, registry, buckets=[0, 1])
    with pytest.raises(ValueError, match="buckets must hold at least one bound"):
        meter_calls(cb, NAME, registry, buckets=[])
    with pytest.raises(TypeError, match="buckets must hold numbers, got str"):
        meter_calls(cb, NAME, registry, buckets=["1"])  # type: ignore[list-item]  # as above
    assert calls(registry) == dict.fromkeys(CALL_KINDS, None)  # nothing was metered
    cb.call(ok)
    meter = meter_calls(cb, NAME, registry, buckets=[0.1, 1, math.inf])
    with pytest.raises(ValueError, match="breaker is already metered, as 'payment_api'"):
        meter_calls(cb, "other", registry)
    with pytest.raises(ValueError, match=r"buckets must be those this registry's .* \(0.1, 1.0"):
        meter_calls(CircuitBreaker(), "other", registry, buckets=[0.5])
    meter.close()


def test_buckets_default_and_configured(registry):
    meter_calls(CircuitBreaker(), NAME, registry)
    bounds = [
        sample.labels["le"]
        for family in registry.collect()
        if family.name == CALL_DURATION.name
        for sample in family.samples
        if sample.name.endswith("_bucket") and sample.labels["kind"] == "successful"
    ]
    assert bounds == [*(str(float(b)) for b in DEFAULT_BUCKETS), "+Inf"]


def test_the_cap_counts_a_metered_name_as_a_listeners(registry):
    limit_circuits(1, registry)
    PrometheusListener("first", registry)
    meter_calls(CircuitBreaker(), "first", registry)  # a name in use: fine
    with pytest.raises(CircuitLimitError):
        meter_calls(CircuitBreaker(), "second", registry)


def test_durations_fold_into_the_buckets_observe_would_fill(registry):
    """The consumer's bulk fold gives exactly what Histogram.observe() gives, bucket by bucket."""
    bounds = [0.001, 0.01, 0.1, 1.0]
    meter = meter_calls(CircuitBreaker(), NAME, registry, buckets=bounds)
    reference_registry = CollectorRegistry()
    reference = Histogram("reference", "", registry=reference_registry, buckets=bounds)
    durations = [0.0, 0.001, 0.0010001, 0.05, 0.1, 0.5, 1.0, 3.0, 1e9]
    for duration in durations:
        meter._record(0, duration)  # what a successful call queues
        reference.observe(duration)
    for bound in [*bounds, math.inf]:
        le = "+Inf" if bound == math.inf else str(bound)
        ours = registry.get_sample_value(
            f"{CALL_DURATION.name}_bucket", {"circuit_name": NAME, "kind": "successful", "le": le}
        )
        assert ours == reference_registry.get_sample_value("reference_bucket", {"le": le})
    assert registry.get_sample_value(
        f"{CALL_DURATION.name}_sum", {"circuit_name": NAME, "kind": "successful"}
    ) == pytest.approx(sum(durations))


class RaisesOnce:
    """A series' value whose first ``inc()`` raises before it counts: a write interrupted there."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self._lock = real._lock
        self.fired = 0

    def inc(self, amount: float) -> None:
        if not self.fired:
            self.fired += 1
            raise Abort
        self.real.inc(amount)

    def get(self) -> float:
        return self.real.get()


def test_a_calls_write_interrupted_after_its_count_adds_only_the_rest_when_run_again(registry):
    # A SIGTERM whose handler exits once landed between a kind's counter increment and its
    # histogram's, in a child of test_faults: the next try wrote that kind's totals again, and
    # a burst's 53 calls counted twice.
    meter = meter_calls(CircuitBreaker(), NAME, registry)
    series = meter._target
    histogram = series._histogram(0)  # successful
    real = histogram._buckets[0]
    histogram._buckets[0] = interrupting = RaisesOnce(real)
    tally = Tally()
    for _ in range(3):
        tally.add((next(SEQUENCE), series, (0, 0.001)))
    with pytest.raises(Abort):
        apply(tally)
    assert interrupting.fired == 1
    assert tally  # resumable: kept for one more try
    apply(tally)
    assert not tally
    histogram._buckets[0] = real
    labels = {"circuit_name": NAME, "kind": "successful"}
    assert registry.get_sample_value(f"{CALLS.name}_total", labels) == 3.0
    assert registry.get_sample_value(f"{CALL_DURATION.name}_count", labels) == 3.0
    assert registry.get_sample_value(f"{CALL_DURATION.name}_sum", labels) == pytest.approx(0.003)


# -- async breakers: AnyioCircuitBreaker on both backends, fluxgate's on asyncio -----------------


def async_kinds(backend: str) -> list[type]:
    return (
        [AnyioCircuitBreaker, AsyncCircuitBreaker]
        if backend == "asyncio"
        else [AnyioCircuitBreaker]
    )


@pytest.mark.anyio
@pytest.mark.parametrize("way", range(4))
async def test_every_way_of_calling_an_async_breaker_is_counted_through_the_consumer(
    anyio_backend, way
):
    for kind in async_kinds(anyio_backend):
        registry = CollectorRegistry()
        pipeline = SignalPipeline()
        cb = kind(tracker=TypeOf(ValueError), tripper=NEVER_TRIPS)
        meter_calls(cb, NAME, registry, pipeline=pipeline)
        call = ways(cb)[way]
        fallback = way >= 2
        async with Consumer(pipeline):
            assert await call(aok) == "ok"
            for function, error in ((afail, ValueError), (aignore, KeyError)):
                if fallback:
                    assert await call(function) == "fallback"
                else:
                    with pytest.raises(error):
                        await call(function)
            await cb.force_open()
            if fallback:
                assert await call(aok) == "fallback"
            else:
                with pytest.raises(CallNotPermittedError):
                    await call(aok)
            await pipeline.flush()
            # The four calls, on the consumer's thread, took one item through the stream: their
            # meter's CallQueue, queued by the first, which the consumer took all four from.
            assert pipeline.statistics().stream == 1
            assert calls(registry) == counted(successful=1, failed=1, ignored=1, not_permitted=1)
            assert timed(registry) == {"successful": 1.0, "failed": 1.0, "ignored": 1.0}


@pytest.mark.anyio
async def test_calls_left_without_their_marker_count_at_the_next_call_flush_or_stop(
    anyio_backend, registry
):
    # A call on the consumer's thread appends its outcome to the meter's CallQueue, then queues
    # the queue (a marker) on the stream if none is queued. An exception between the two (a
    # signal handler's) leaves its outcome queued with no marker: the next call's marker takes
    # it, flush() marks it, and so does the consumer's stop. Appended here as such a call
    # leaves it.
    pipeline = SignalPipeline()
    cb = CircuitBreaker(tripper=NEVER_TRIPS)
    meter = meter_calls(cb, NAME, registry, pipeline=pipeline)
    queue = meter._queue
    left = (CALL_KINDS.index("successful"), 0.001)
    async with Consumer(pipeline):
        await pipeline.flush()
        assert not queue.armed
        queue.append(left)
        assert cb.call(ok) == "ok"  # its marker takes both
        await pipeline.flush()
        assert calls(registry) == counted(successful=2)
        queue.append(left)
        await pipeline.flush()
        assert calls(registry) == counted(successful=3)
        queue.append(left)
    assert calls(registry) == counted(successful=4)  # the stop took it
    assert not queue
    assert cb.call(ok) == "ok"  # and with no consumer, a call applies in the call
    assert calls(registry) == counted(successful=5)


@pytest.mark.anyio
async def test_closing_one_of_two_meters_of_a_name_leaves_the_other_counting(
    anyio_backend, registry
):
    # Two breakers metered under one name share its series; closing one drops them (whoever
    # wrote them, as a listener's close() does). The other meter's marker, queued before that
    # close, is in the same batch or an earlier one: its queue must be disarmed whatever the
    # close voids, or its later calls would wait for a marker that never comes.
    pipeline = SignalPipeline()
    first, second = CircuitBreaker(tripper=NEVER_TRIPS), CircuitBreaker(tripper=NEVER_TRIPS)
    closing = meter_calls(first, NAME, registry, pipeline=pipeline)
    meter_calls(second, NAME, registry, pipeline=pipeline)
    async with Consumer(pipeline):
        await pipeline.flush()
        first.call(ok)
        second.call(ok)  # its meter's marker, queued before the close
        closing.close()
        await pipeline.flush()
        assert calls(registry) == dict.fromkeys(CALL_KINDS)  # dropped, the calls before it too
        for _ in range(3):
            second.call(ok)
        await pipeline.flush()
        assert calls(registry)["successful"] == 3
        first.call(ok)  # no longer metered
        await pipeline.flush()
        assert calls(registry)["successful"] == 3


@pytest.mark.anyio
async def test_a_call_cancelled_while_it_runs_is_counted_cancelled(anyio_backend):
    for kind in async_kinds(anyio_backend):
        registry = CollectorRegistry()
        pipeline = SignalPipeline()
        cb = kind(tripper=NEVER_TRIPS)
        meter_calls(cb, NAME, registry, pipeline=pipeline)
        started = anyio.Event()

        async def hang(started: anyio.Event = started) -> None:
            started.set()
            await anyio.sleep_forever()  # sleep-ok: cancelled by the test, never woken

        async with Consumer(pipeline):
            with anyio.move_on_after(0):  # a deadline, as it is already due
                await cb.call(hang)
            async with anyio.create_task_group() as tg:
                tg.start_soon(cb.call, hang)
                await started.wait()
                tg.cancel_scope.cancel()
            await pipeline.flush()
        assert calls(registry) == counted(cancelled=2)
        assert cb.info().metrics.total_count == 0  # neither a success nor a failure upstream


# -- every path, exact: a property -----------------------------------------------------------------

operation = st.one_of(
    st.tuples(st.just("call"), st.sampled_from(["ok", "fail", "ignore", "refused"]), st.booleans()),
    st.tuples(st.just("start")),
    st.tuples(st.just("stop")),
    st.tuples(st.just("flush")),
)
FUNCTIONS: dict[str, Callable[[], object]] = {"ok": ok, "fail": fail, "ignore": ignore}
KIND_OF = {"ok": "successful", "fail": "failed", "ignore": "ignored", "refused": "not_permitted"}


@pytest.mark.anyio
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(operation, max_size=60), buffer=st.integers(1, 4))
async def test_counts_equal_calls_on_every_path(anyio_backend, ops, buffer):
    """Stream, bridge, overflow (buffers of 1 to 4) and direct: every call counted once."""
    registry = CollectorRegistry()
    pipeline = SignalPipeline(max_buffer_size=buffer)
    closed = CircuitBreaker(tracker=TypeOf(ValueError), tripper=NEVER_TRIPS)
    refusing = CircuitBreaker()
    refusing.force_open()
    meter_calls(closed, "closed", registry, pipeline=pipeline)
    meter_calls(refusing, "refusing", registry, pipeline=pipeline)
    expected = {"closed": counted(), "refusing": counted()}
    consumer = Consumer(pipeline)

    def run(what: str) -> None:
        breaker = refusing if what == "refused" else closed
        with contextlib.suppress(ValueError, KeyError, CallNotPermittedError):
            breaker.call(FUNCTIONS.get(what, ok))

    try:
        for op in ops:
            if op[0] == "call":
                _, what, from_thread = op
                if from_thread:
                    in_thread(run, what)
                else:
                    run(what)
                name = "refusing" if what == "refused" else "closed"
                expected[name][KIND_OF[what]] += 1
            elif op[0] == "start" and not pipeline.running:
                await consumer.start()
            elif op[0] == "stop" and pipeline.running:
                await consumer.stop()
            elif op[0] == "flush":
                await pipeline.flush()
                assert {name: calls(registry, name) for name in expected} == expected
        await pipeline.flush()
    finally:
        if pipeline.running:
            await consumer.stop()
    assert {name: calls(registry, name) for name in expected} == expected
    durations = timed(registry, "closed")
    assert durations == {kind: expected["closed"][kind] for kind in CALL_DURATION_KINDS}


# -- trips by reason, and shadow trips in metrics_only ---------------------------------------------


def trips(registry: CollectorRegistry, name: str = NAME) -> dict[str, float]:
    """``circuit_breaker_trips_total`` by reason, the series present only."""
    out: dict[str, float] = {}
    for family in registry.collect():
        if family.name == TRIPS.name:
            for sample in family.samples:
                if sample.name == TRIPS.sample and sample.labels["circuit_name"] == name:
                    out[sample.labels["reason"]] = sample.value
    return out


def shadow(registry: CollectorRegistry, name: str = NAME) -> float | None:
    return registry.get_sample_value(SHADOW_TRIPS.sample, {"circuit_name": name})


def opened(registry: CollectorRegistry) -> float:
    """Transitions to open, as the circuit's PrometheusListener counted them."""
    return sum(
        registry.get_sample_value(
            "circuit_breaker_state_transition_total",
            {"circuit_name": NAME, "old_state": old, "new_state": "open"},
        )
        or 0.0
        for old in ("closed", "half_open")
    )


def with_trips(**reasons: float) -> dict[str, float]:
    return {**dict.fromkeys(TRIP_REASONS, 0.0), **{k: float(v) for k, v in reasons.items()}}


class OneFailure(Tripper):
    def __call__(self, ctx: CallContext) -> bool:
        return ctx.metric.failure_count >= 1


# A trip in closed (the first call is slower than 1 ns: avg_latency), a probe in half-open that
# succeeds while the tripper still holds (no trip: the circuit stays half-open), a failed probe
# (a trip: avg_latency and failure_streak hold), then a custom condition.
TRIPPER = FailureStreak(1) | AvgLatency(1e-9)


@pytest.mark.parametrize("kind", SYNC_BREAKERS)
def test_each_transition_to_open_counts_one_trip_labelled_by_what_held(registry, kind):
    cb = kind(
        tripper=TRIPPER,
        retry=Always(),
        permit=AllowAll(),
        listeners=[PrometheusListener(NAME, registry)],
    )
    meter_calls(cb, NAME, registry)
    assert trips(registry) == with_trips()
    assert shadow(registry) == 0.0
    cb.call(ok)  # closed -> open
    assert cb.info().state == "open"
    cb.call(ok)  # open -> half_open; the probe succeeds, the tripper still holds: half-open
    assert cb.info().state == "half_open"
    with pytest.raises(ValueError, match="counted"):
        cb.call(fail)  # half_open -> open
    assert trips(registry) == with_trips(**{"avg_latency": 1, "avg_latency+failure_streak": 1})
    assert opened(registry) == 2.0
    custom = kind(tripper=MinRequests(1) & OneFailure() | FailureRate(1.0))
    meter_calls(custom, "custom", registry)
    with pytest.raises(ValueError, match="counted"):
        custom.call(fail)
    assert trips(registry, "custom") == with_trips(**{"failure_rate+other": 1})


@pytest.mark.parametrize("kind", SYNC_BREAKERS)
def test_metrics_only_counts_a_shadow_trip_once_per_crossing(registry, kind):
    cb = kind(tripper=MinRequests(2) & FailureRate(0.5))
    meter_calls(cb, NAME, registry)
    cb.metrics_only()
    for _ in range(3):
        with pytest.raises(ValueError, match="counted"):
            cb.call(fail)  # over from the second on: one crossing
    assert shadow(registry) == 1.0
    for _ in range(4):
        cb.call(ok)  # 3 of 7 failed: under again
    with pytest.raises(ValueError, match="counted"):
        cb.call(fail)  # 4 of 8: over again
    assert shadow(registry) == 2.0
    assert cb.info().state == "metrics_only"
    assert trips(registry) == with_trips()


@pytest.mark.anyio
async def test_trips_and_shadow_trips_on_async_breakers(anyio_backend):
    for kind in async_kinds(anyio_backend):
        registry = CollectorRegistry()
        pipeline = SignalPipeline()
        cb = kind(
            tripper=TRIPPER,
            retry=Always(),
            permit=AllowAll(),
            listeners=[PrometheusListener(NAME, registry, pipeline=pipeline)],
        )
        meter_calls(cb, NAME, registry, pipeline=pipeline)
        async with Consumer(pipeline):
            await cb.call(aok)
            await cb.call(aok)
            assert cb.info().state == "half_open"
            with pytest.raises(ValueError, match="counted"):
                await cb.call(afail)
            await cb.metrics_only()
            for _ in range(2):
                with pytest.raises(ValueError, match="counted"):
                    await cb.call(afail)
            await pipeline.flush()
        reasons = {"avg_latency": 1, "avg_latency+failure_streak": 1}
        assert trips(registry) == with_trips(**reasons), kind
        assert opened(registry) == 2.0
        assert shadow(registry) == 1.0


def test_a_registry_holding_another_collector_under_our_names_is_refused(registry):
    Counter("circuit_breaker_calls", "someone else's", registry=registry)
    cb = CircuitBreaker()
    with pytest.raises(
        ValueError, match="registry already has a collector named 'circuit_breaker_calls'"
    ):
        meter_calls(cb, NAME, registry)
    assert cb.call(ok) == "ok"  # left unmetered
    meter_calls(cb, NAME, CollectorRegistry())  # and free to be metered elsewhere


@pytest.mark.anyio
async def test_threads_sharing_a_thread_safe_breaker_are_counted_exactly(anyio_backend):
    """Eight threads at once through the bridge (and its overflow), the consumer on the loop.

    A call that finds the consumer asleep after a quiet spell is applied in the thread (lone).
    """
    registry = CollectorRegistry()
    pipeline = SignalPipeline(max_buffer_size=8)
    cb = ThreadSafeCircuitBreaker(tracker=TypeOf(ValueError), tripper=NEVER_TRIPS)
    meter_calls(cb, NAME, registry, pipeline=pipeline)
    rounds = 200

    def work() -> None:
        for _ in range(rounds):
            cb.call(ok)
            with contextlib.suppress(ValueError):
                cb.call(fail)
            cb.call_with_fallback(ignore, fallback)

    async with Consumer(pipeline):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(anyio.to_thread.run_sync, work)
        await pipeline.flush()
        assert calls(registry) == counted(successful=1600, failed=1600, ignored=1600)
        stats = pipeline.statistics()
        assert stats.bridge + stats.overflow + stats.direct >= 4800


def test_close_gives_back_what_the_breaker_had_before_another_wrapper_included(registry):
    cb = CircuitBreaker(tripper=NEVER_TRIPS)
    closed = cb._handlers["closed"]  # to wrap it as someone else might
    seen: list[object] = []
    original = closed.execute

    def theirs(func: Callable[..., object], *args: object, **kwargs: object) -> object:
        seen.append(func)
        return original(func, *args, **kwargs)

    closed.execute = theirs  # type: ignore[method-assign]  # the other wrapper, on purpose
    tracker = cb._tracker  # to compare after close()
    with meter_calls(cb, NAME, registry):
        assert cb.call(ok) == "ok"  # through ours, then theirs
    assert cb.call(ok) == "ok"
    assert closed.execute is theirs
    assert cb._tracker is tracker  # as before
    assert len(seen) == 2
    assert seen[1] is ok


@pytest.mark.anyio
async def test_a_meter_made_after_close_counts_its_calls_in_the_same_batch(anyio_backend, registry):
    # close() and a new meter of the same name, then its calls, all on the loop thread before
    # the consumer takes them: one batch holds the close and the new meter's queue. That queue
    # was made after the close, so all it holds (the series at 0, the calls) is newer: it must
    # count, where the closed meter's calls go with the series.
    pipeline = SignalPipeline(batch_window=0)
    cb = CircuitBreaker(tripper=NEVER_TRIPS)
    async with Consumer(pipeline):
        first = meter_calls(cb, NAME, registry, pipeline=pipeline)
        await pipeline.flush()
        cb.call(ok)  # before the close: dropped with the series
        first.close()
        meter_calls(cb, NAME, registry, pipeline=pipeline)
        for _ in range(3):
            cb.call(ok)
        await pipeline.flush()
        assert calls(registry) == counted(successful=3)
