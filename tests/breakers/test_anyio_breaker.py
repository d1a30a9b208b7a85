"""Behaviour of ``AnyioCircuitBreaker``, on asyncio and on trio, with real fluxgate components.

Time is never slept: the ``clock`` fixture freezes the wall clock (``time.time``, and the name
``fluxgate.permits`` imported) and the call timer (``time.perf_counter``); tests move them with
``clock.advance``. Concurrency is synchronised with events and ``anyio.wait_all_tasks_blocked``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import anyio
import fluxgate.permits
import pytest
from anyio.lowlevel import checkpoint
from fluxgate import AsyncCircuitBreaker, CallNotPermittedError
from fluxgate.circuitbreaker import CircuitBreakerInfo
from fluxgate.permits import All, Random
from fluxgate.retries import Always, Cooldown
from fluxgate.signal import Signal
from fluxgate.trackers import TypeOf
from fluxgate.trippers import FailureRate, FailureStreak, MinRequests, SlowRate
from fluxgate.windows import CountWindow
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxgate_stream.anyio_breaker import AnyioCircuitBreaker

if TYPE_CHECKING:
    from collections.abc import Callable

    from fluxgate.state import State

pytestmark = pytest.mark.anyio

BREAKER_LOGGER = "fluxgate_stream.anyio_breaker"


class FakeClock:
    """A frozen wall clock and call timer that only ``advance`` moves."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.perf = 5_000.0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(time, "time", self.time)
        monkeypatch.setattr(time, "perf_counter", self.perf_counter)
        monkeypatch.setattr(fluxgate.permits, "time", self.time)

    def time(self) -> float:
        return self.wall

    def perf_counter(self) -> float:
        return self.perf

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.perf += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    fake.install(monkeypatch)
    return fake


class Recorder:
    """A sync listener that keeps every signal."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []

    def __call__(self, signal: Signal) -> None:
        self.signals.append(signal)

    @property
    def transitions(self) -> list[tuple[State, State]]:
        return [(s.old_state, s.new_state) for s in self.signals]


async def double(x: int) -> int:
    return x * 2


async def fail(message: str = "boom") -> None:
    raise ValueError(message)


async def trip(cb: AnyioCircuitBreaker) -> None:
    """One tracked failure: enough to open a breaker whose tripper is ``FailureStreak(1)``."""
    with pytest.raises(ValueError, match=r"^boom$"):
        await cb.call(fail)


# --- state transitions -------------------------------------------------------------------------


async def test_passing_calls_return_results_and_are_recorded(clock: FakeClock) -> None:
    cb = AnyioCircuitBreaker()

    assert await cb.call(double, 5) == 10
    assert await cb.call(double, x=7) == 14

    info = cb.info()
    assert isinstance(info, CircuitBreakerInfo)
    assert info.state == "closed"
    assert info.changed_at == clock.wall
    assert info.reopens == 0
    assert info.metrics.total_count == 2
    assert info.metrics.failure_count == 0


async def test_closed_opens_when_the_tripper_fires(clock: FakeClock) -> None:
    recorder = Recorder()
    cb = AnyioCircuitBreaker(tripper=MinRequests(2) & FailureRate(0.5), listeners=[recorder])

    await trip(cb)
    assert cb.info().state == "closed"
    assert cb.info().metrics.failure_count == 1

    clock.advance(5.0)
    await trip(cb)

    info = cb.info()
    assert info.state == "open"
    assert info.changed_at == clock.wall
    assert info.metrics.total_count == 0  # the window is reset on every transition
    assert recorder.signals == [Signal(old_state="closed", new_state="open", timestamp=clock.wall)]


async def test_open_rejects_calls_until_the_retry_allows_a_probe(clock: FakeClock) -> None:
    recorder = Recorder()
    cb = AnyioCircuitBreaker(
        tripper=FailureStreak(1), retry=Cooldown(60.0), permit=All(), listeners=[recorder]
    )
    calls: list[int] = []

    async def tracked(x: int) -> int:
        calls.append(x)
        return x

    await trip(cb)
    clock.advance(59.9)
    with pytest.raises(CallNotPermittedError, match=r"^Circuit breaker is open$"):
        await cb.call(tracked, 1)
    assert calls == []

    clock.advance(0.1)
    assert await cb.call(tracked, 2) == 2

    assert calls == [2]
    assert cb.info().state == "closed"
    assert recorder.transitions == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_half_open_failures_reopen_once_the_tripper_fires(clock: FakeClock) -> None:
    recorder = Recorder()
    cb = AnyioCircuitBreaker(
        tripper=MinRequests(2) & FailureRate(0.5),
        retry=Always(),
        permit=All(),
        listeners=[recorder],
    )
    await trip(cb)
    await trip(cb)
    assert cb.info().state == "open"

    await trip(cb)  # open -> half_open; one failure is below MinRequests(2)
    assert cb.info().state == "half_open"
    assert cb.info().metrics.failure_count == 1

    clock.advance(1.0)
    await trip(cb)

    info = cb.info()
    assert info.state == "open"
    assert info.reopens == 1
    assert info.changed_at == clock.wall
    assert recorder.transitions == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
    ]


async def test_a_successful_probe_closes_and_clears_reopens() -> None:
    cb = AnyioCircuitBreaker(tripper=FailureStreak(1), retry=Always(), permit=All())
    await trip(cb)
    await trip(cb)  # open -> half_open -> open
    assert cb.info().reopens == 1

    assert await cb.call(double, 4) == 8

    info = cb.info()
    assert info.state == "closed"
    assert info.reopens == 0
    assert info.metrics.total_count == 0


async def test_a_slow_probe_keeps_the_circuit_half_open(clock: FakeClock) -> None:
    cb = AnyioCircuitBreaker(tripper=SlowRate(0.5, threshold=1.0), retry=Always(), permit=All())

    async def take(seconds: float) -> float:
        clock.advance(seconds)
        return seconds

    await cb.call(take, 2.0)  # slow rate 1/1: opens
    assert cb.info().state == "open"

    assert await cb.call(take, 2.0) == 2.0  # a slow success: still tripped, stays half_open
    assert cb.info().state == "half_open"
    await cb.call(take, 0.0)  # slow rate 1/2, still >= 0.5
    assert cb.info().state == "half_open"
    await cb.call(take, 0.0)  # slow rate 1/3

    assert cb.info().state == "closed"


async def test_half_open_rejects_calls_the_permit_declines() -> None:
    cb = AnyioCircuitBreaker(tripper=FailureStreak(1), retry=Always(), permit=Random(0.0))
    calls: list[int] = []

    async def tracked() -> None:
        calls.append(1)

    await trip(cb)
    with pytest.raises(
        CallNotPermittedError, match=r"^Circuit breaker is half-open, not executing$"
    ):
        await cb.call(tracked)

    assert calls == []
    assert cb.info().state == "half_open"


async def test_half_open_entry_resets_the_failure_streak() -> None:
    cb = AnyioCircuitBreaker(tripper=FailureStreak(2), retry=Always(), permit=All())
    await trip(cb)
    await trip(cb)
    assert cb.info().state == "open"

    await trip(cb)  # a streak of 3 without the reset on entry
    assert cb.info().state == "half_open"
    await trip(cb)

    assert cb.info().state == "open"
    assert cb.info().reopens == 1


async def test_untracked_exceptions_propagate_unrecorded_in_closed_and_half_open() -> None:
    cb = AnyioCircuitBreaker(
        tracker=TypeOf(ValueError), tripper=FailureStreak(1), retry=Always(), permit=All()
    )

    async def lookup() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await cb.call(lookup)
    assert cb.info().state == "closed"
    assert cb.info().metrics.total_count == 0

    await trip(cb)
    with pytest.raises(KeyError, match="missing"):
        await cb.call(lookup)

    assert cb.info().state == "half_open"
    assert cb.info().metrics.total_count == 0


async def test_slow_calls_are_classified_against_every_slow_rate_threshold(
    clock: FakeClock,
) -> None:
    cb = AnyioCircuitBreaker(
        tripper=MinRequests(3) & (SlowRate(0.5, threshold=1.0) | SlowRate(0.9, threshold=2.5))
    )

    async def take(seconds: float) -> float:
        clock.advance(seconds)
        return seconds

    await cb.call(take, 1.5)
    await cb.call(take, 3.0)

    metrics = cb.info().metrics
    assert metrics.total_duration == 4.5
    assert dict(metrics.slow_counts) == {1.0: 2, 2.5: 1}

    await cb.call(take, 0.0)  # three calls, two of them slow at 1.0 s

    assert cb.info().state == "open"


async def test_cancelled_calls_are_not_failures() -> None:
    cb = AnyioCircuitBreaker(tripper=FailureStreak(1))
    never = anyio.Event()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cb.call, never.wait)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()

    assert cb.info().state == "closed"
    assert cb.info().metrics.total_count == 0


async def test_default_components_are_upstreams(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    cb = AnyioCircuitBreaker()  # CountWindow(100), All(), MinRequests(100) & FailureRate(0.5) ...
    for _ in range(99):
        await trip(cb)
    assert cb.info().state == "closed"
    await trip(cb)
    assert cb.info().state == "open"

    clock.advance(59.0)  # ... Cooldown(60.0) ...
    with pytest.raises(CallNotPermittedError, match=r"^Circuit breaker is open$"):
        await cb.call(double, 1)
    clock.advance(1.0)
    monkeypatch.setattr(fluxgate.permits, "random", lambda: 0.09)  # ... RampUp(0.1, ...)
    assert await cb.call(double, 1) == 2

    assert cb.info().state == "closed"


def test_max_half_open_calls_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^max_half_open_calls must be at least 1, got 0$"):
        AnyioCircuitBreaker(max_half_open_calls=0)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (True, TypeError, "max_half_open_calls must be an int, got bool"),
        ("3", TypeError, "max_half_open_calls must be an int, got str"),
        (
            10**400,
            ValueError,
            "max_half_open_calls must be at most 9223372036854775807 (sys.maxsize), "
            "got an int of 1329 bits",
        ),
    ],
    ids=["bool", "str", "huge"],
)
def test_max_half_open_calls_must_be_a_plain_count(bad: object, error: type, message: str) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        AnyioCircuitBreaker(max_half_open_calls=bad)  # type: ignore[arg-type]  # deliberately bad


# --- manual commands ---------------------------------------------------------------------------


async def test_metrics_only_records_calls_but_never_opens() -> None:
    recorder = Recorder()
    cb = AnyioCircuitBreaker(tripper=FailureStreak(1), listeners=[recorder])
    await cb.metrics_only()

    await trip(cb)
    await trip(cb)
    assert await cb.call(double, 1) == 2

    info = cb.info()
    assert info.state == "metrics_only"
    assert info.metrics.total_count == 3
    assert info.metrics.failure_count == 2
    assert recorder.transitions == [("closed", "metrics_only")]


async def test_disable_passes_calls_through_unrecorded() -> None:
    cb = AnyioCircuitBreaker(tripper=FailureStreak(1))
    await cb.disable()

    await trip(cb)
    assert await cb.call(double, 3) == 6

    assert cb.info().state == "disabled"
    assert cb.info().metrics.total_count == 0


async def test_force_open_rejects_every_call() -> None:
    cb = AnyioCircuitBreaker(retry=Always())
    calls: list[int] = []

    async def tracked() -> None:
        calls.append(1)

    await cb.force_open()
    with pytest.raises(CallNotPermittedError, match=r"^Circuit breaker is forced open$"):
        await cb.call(tracked)

    assert calls == []
    assert cb.info().state == "forced_open"


async def test_reset_closes_and_clears_metrics_and_reopens(clock: FakeClock) -> None:
    recorder = Recorder()
    cb = AnyioCircuitBreaker(
        tripper=MinRequests(2) & FailureRate(0.5),
        retry=Always(),
        permit=All(),
        listeners=[recorder],
    )
    await trip(cb)
    await trip(cb)
    await trip(cb)
    await trip(cb)  # closed -> open -> half_open -> open
    assert cb.info().reopens == 1

    clock.advance(3.0)
    await cb.reset()

    info = cb.info()
    assert info.state == "closed"
    assert info.reopens == 0
    assert info.changed_at == clock.wall
    assert info.metrics.total_count == 0
    assert recorder.signals[-1] == Signal(
        old_state="open", new_state="closed", timestamp=clock.wall
    )


async def test_reset_while_closed_is_a_transition_and_clears_the_window() -> None:
    recorder = Recorder()
    cb = AnyioCircuitBreaker(listeners=[recorder])
    await cb.call(double, 1)

    await cb.reset()

    assert cb.info().metrics.total_count == 0
    assert recorder.transitions == [("closed", "closed")]


# --- decorator and fallbacks -------------------------------------------------------------------


async def test_decorator_passes_arguments_keeps_metadata_and_propagates_errors() -> None:
    cb = AnyioCircuitBreaker()

    async def add(a: int, b: int = 0) -> int:
        return a + b

    guarded = cb(add)
    guarded_with_parentheses = cb()(add)

    assert await guarded(2, b=3) == 5
    assert await guarded_with_parentheses(4) == 4
    assert guarded.__name__ == "add"
    assert guarded.__wrapped__ is add
    with pytest.raises(ValueError, match=r"^boom$"):
        await cb(fail)()
    assert cb.info().metrics.total_count == 3


async def test_decorator_fallback_receives_the_exception_including_rejections() -> None:
    cb = AnyioCircuitBreaker(tripper=FailureStreak(1), retry=Cooldown(60.0))

    @cb(fallback=lambda exc: f"fallback: {exc!r}")
    async def guarded(message: str) -> str:
        raise ValueError(message)

    assert await guarded("down") == "fallback: ValueError('down')"
    assert cb.info().state == "open"
    assert await guarded("down") == "fallback: CallNotPermittedError('Circuit breaker is open')"


async def test_a_fallback_may_reraise() -> None:
    cb = AnyioCircuitBreaker()

    def only_value_errors(exc: Exception) -> str:
        if isinstance(exc, ValueError):
            return "handled"
        raise exc

    async def raise_type_error() -> str:
        raise TypeError("not handled")

    assert await cb(fail, fallback=only_value_errors)() == "handled"
    with pytest.raises(TypeError, match=r"^not handled$"):
        await cb(raise_type_error, fallback=only_value_errors)()


async def test_call_with_fallback_returns_the_result_or_the_fallback() -> None:
    cb = AnyioCircuitBreaker(tripper=FailureStreak(1), retry=Cooldown(60.0))

    def fallback(exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc}"

    assert await cb.call_with_fallback(double, fallback, 21) == 42
    assert await cb.call_with_fallback(fail, fallback, "down") == "ValueError: down"
    assert (
        await cb.call_with_fallback(fail, fallback)
        == "CallNotPermittedError: Circuit breaker is open"
    )


# --- listeners ---------------------------------------------------------------------------------


async def test_sync_and_async_listeners_are_notified_in_registration_order() -> None:
    seen: list[tuple[str, Signal]] = []

    def sync_listener(signal: Signal) -> None:
        seen.append(("sync", signal))

    async def async_listener(signal: Signal) -> None:
        await checkpoint()
        seen.append(("async", signal))

    class CallableListener:
        async def __call__(self, signal: Signal) -> None:
            seen.append(("callable", signal))

    cb = AnyioCircuitBreaker(
        tripper=FailureStreak(1), listeners=[async_listener, sync_listener, CallableListener()]
    )
    await trip(cb)
    await cb.reset()

    assert [(name, s.old_state, s.new_state) for name, s in seen] == [
        ("async", "closed", "open"),
        ("sync", "closed", "open"),
        ("callable", "closed", "open"),
        ("async", "open", "closed"),
        ("sync", "open", "closed"),
        ("callable", "open", "closed"),
    ]
    assert seen[0][1] is seen[1][1] is seen[2][1]  # every listener gets the same Signal


async def test_failing_listeners_are_logged_and_never_break_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()

    def failing_sync(signal: Signal) -> None:
        raise RuntimeError("sync listener down")

    async def failing_async(signal: Signal) -> None:
        raise RuntimeError("async listener down")

    class ExplodingListener:  # an instance: named after its class
        def __call__(self, _signal: Signal) -> None:
            raise RuntimeError("instance listener down")

    cb = AnyioCircuitBreaker(
        tripper=FailureStreak(1),
        listeners=[failing_sync, failing_async, ExplodingListener(), recorder],
    )
    with caplog.at_level(logging.ERROR, logger=BREAKER_LOGGER):
        await trip(cb)  # the caller sees its own ValueError, not a listener's error

    assert cb.info().state == "open"
    assert recorder.transitions == [("closed", "open")]
    records = [r for r in caplog.records if r.name == BREAKER_LOGGER]
    assert [r.getMessage() for r in records] == [
        f"Listener {failing_sync.__qualname__} failed on closed -> open",
        f"Listener {failing_async.__qualname__} failed on closed -> open",
        "Listener test_failing_listeners_are_logged_and_never_break_the_call.<locals>"
        ".ExplodingListener failed on closed -> open",
    ]
    assert all(r.msg == "Listener %s failed on %s -> %s" for r in records)  # lazy formatting
    assert [str(r.exc_info[1]) for r in records if r.exc_info] == [
        "sync listener down",
        "async listener down",
        "instance listener down",
    ]


async def test_listeners_run_after_the_transition_and_block_nothing_else() -> None:
    entered = anyio.Event()
    release = anyio.Event()
    state_seen_by_listener: list[State] = []
    errors: list[Exception] = []

    async def slow_listener(signal: Signal) -> None:
        state_seen_by_listener.append(cb.info().state)
        entered.set()
        await release.wait()

    cb = AnyioCircuitBreaker(
        tripper=FailureStreak(1), retry=Cooldown(60.0), listeners=[slow_listener]
    )

    async def tripping_call() -> None:
        try:
            await cb.call(fail)
        except ValueError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tripping_call)
        await entered.wait()
        with pytest.raises(CallNotPermittedError, match=r"^Circuit breaker is open$"):
            await cb.call(double, 1)  # another call proceeds while the listener runs
        assert errors == []  # the tripping call waits for its listeners
        release.set()

    assert state_seen_by_listener == ["open"]
    assert [str(e) for e in errors] == ["boom"]


# --- concurrency -------------------------------------------------------------------------------


async def test_half_open_probes_are_capped_and_waiters_dispatch_without_a_slot() -> None:
    cb = AnyioCircuitBreaker(
        tripper=FailureStreak(1), retry=Always(), permit=All(), max_half_open_calls=2
    )
    await trip(cb)
    gates = [anyio.Event() for _ in range(4)]
    in_flight: list[int] = []
    results: dict[int, int] = {}

    async def probe(i: int) -> int:
        in_flight.append(i)
        await gates[i].wait()
        in_flight.remove(i)
        return i

    async def caller(i: int) -> None:
        results[i] = await cb.call(probe, i)

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(caller, i)
        await anyio.wait_all_tasks_blocked()
        assert cb.info().state == "half_open"
        assert len(in_flight) == 2  # two probes run; two callers wait for a slot

        first = in_flight[0]
        gates[first].set()  # a successful probe closes the circuit
        await anyio.wait_all_tasks_blocked()
        assert cb.info().state == "closed"
        # Both waiters now run through CLOSED: neither kept the slot it was woken with.
        assert len(in_flight) == 3

        for gate in gates:
            gate.set()

    assert results == {0: 0, 1: 1, 2: 2, 3: 3}
    # The second probe finished after the circuit closed: a stale outcome, not recorded.
    assert cb.info().metrics.total_count == 2


async def test_an_outcome_from_before_a_transition_is_discarded() -> None:
    recorder = Recorder()
    cb = AnyioCircuitBreaker(tripper=FailureStreak(1), listeners=[recorder])
    gate = anyio.Event()
    errors: list[Exception] = []

    async def late_failure() -> None:
        await gate.wait()
        raise ValueError("late")

    async def caller() -> None:
        try:
            await cb.call(late_failure)
        except ValueError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        await trip(cb)
        gate.set()

    assert [str(e) for e in errors] == ["late"]  # the caller still gets its exception
    assert cb.info().state == "open"
    assert cb.info().metrics.total_count == 0
    assert recorder.transitions == [("closed", "open")]


async def test_a_stale_probe_success_cannot_close_a_reopened_circuit() -> None:
    recorder = Recorder()
    cb = AnyioCircuitBreaker(
        tripper=FailureStreak(1), retry=Always(), permit=All(), listeners=[recorder]
    )
    await trip(cb)
    gate = anyio.Event()
    results: list[int] = []

    async def slow_probe() -> int:
        await gate.wait()
        return 7

    async def caller() -> None:
        results.append(await cb.call(slow_probe))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)  # open -> half_open, then waits
        await anyio.wait_all_tasks_blocked()
        await trip(cb)  # a failing probe: half_open -> open
        gate.set()

    assert results == [7]
    assert cb.info().state == "open"
    assert cb.info().reopens == 1
    assert recorder.transitions == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
    ]


async def test_an_outcome_from_before_a_round_trip_to_the_same_state_is_discarded() -> None:
    # Stricter than upstream, which compares state handlers and so records this one.
    recorder = Recorder()
    cb = AnyioCircuitBreaker(tripper=FailureStreak(1), listeners=[recorder])
    gate = anyio.Event()
    errors: list[Exception] = []

    async def late_failure() -> None:
        await gate.wait()
        raise ValueError("late")

    async def caller() -> None:
        try:
            await cb.call(late_failure)
        except ValueError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        await cb.reset()  # closed -> closed
        gate.set()

    assert [str(e) for e in errors] == ["late"]
    assert cb.info().state == "closed"
    assert cb.info().metrics.total_count == 0
    assert recorder.transitions == [("closed", "closed")]


# --- same behaviour as upstream, operation by operation ----------------------------------------

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("ok"), st.sampled_from([0.0, 0.5, 1.0, 2.0])),
        st.tuples(st.just("fail"), st.just(0.0)),
        st.tuples(st.just("untracked"), st.just(0.0)),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 10.0])),
        st.tuples(
            st.sampled_from(["reset", "disable", "metrics_only", "force_open"]), st.just(0.0)
        ),
    ),
    max_size=30,
)


async def play(
    factory: Callable[..., AnyioCircuitBreaker | AsyncCircuitBreaker],
    operations: list[tuple[str, float]],
    clock: FakeClock,
) -> list[object]:
    """Apply ``operations`` one by one; return every outcome, every ``info()`` and the signals."""
    recorder = Recorder()
    cb = factory(
        window=CountWindow(4),
        tracker=TypeOf(ValueError),
        tripper=MinRequests(2) & (FailureRate(0.5) | SlowRate(0.5, threshold=1.0)),
        retry=Cooldown(10.0),
        permit=All(),
        listeners=[recorder],
    )

    async def work(kind: str, seconds: float) -> float:
        clock.perf += seconds
        if kind == "fail":
            raise ValueError("tracked")
        if kind == "untracked":
            raise KeyError("untracked")
        return seconds

    trace: list[object] = []
    for kind, amount in operations:
        if kind == "wait":
            clock.advance(amount)
        elif kind in {"ok", "fail", "untracked"}:
            try:
                trace.append(await cb.call(work, kind, amount))
            except Exception as exc:  # noqa: BLE001 - the outcome itself is what is compared
                trace.append(repr(exc))
        else:
            await getattr(cb, kind)()
        trace.append(cb.info())
    trace.append(recorder.signals)
    return trace


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(operations=OPERATIONS)
def test_sequential_behaviour_matches_upstream_on_both_backends(
    operations: list[tuple[str, float]],
) -> None:
    traces = {}
    for name, factory, backend in [
        ("upstream", AsyncCircuitBreaker, "asyncio"),
        ("asyncio", AnyioCircuitBreaker, "asyncio"),
        ("trio", AnyioCircuitBreaker, "trio"),
    ]:
        with pytest.MonkeyPatch.context() as monkeypatch:
            clock = FakeClock()
            clock.install(monkeypatch)
            traces[name] = anyio.run(play, factory, operations, clock, backend=backend)

    assert traces["asyncio"] == traces["upstream"]
    assert traces["trio"] == traces["upstream"]
