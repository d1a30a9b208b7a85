"""Sharing one breaker between threads: fluxgate's ``CircuitBreaker`` cannot, ours can.

Each race is made to happen, not hoped for: the threads meet at barriers and events, so every
test gives the same answer on every run. The same scenario runs on upstream's class (where it
goes wrong) and on ``ThreadSafeCircuitBreaker`` (where it does not).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import Counter

import pytest
from fluxgate import CallNotPermittedError, CircuitBreaker
from fluxgate.permits import All
from fluxgate.retries import Cooldown
from fluxgate.signal import Signal
from fluxgate.trippers import FailureRate, FailureStreak, MinRequests
from prometheus_client import CollectorRegistry

from fluxgate_stream import (
    ConsumerThread,
    PrometheusListener,
    SignalPipeline,
    ThreadSafeCircuitBreaker,
    watch,
)

from ..support.metrics import count, shown
from ..support.processes import CHILDREN, importing_tests, run_python

WAIT = 10  # seconds: a safety net for a broken test, never what synchronises it


class Recorder:
    """A listener that keeps every signal, in the order the breaker called it."""

    def __init__(self) -> None:
        self.signals: list[tuple[str, str]] = []

    def __call__(self, signal: Signal) -> None:
        self.signals.append((signal.old_state, signal.new_state))


def run_together(*targets) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


def two_failures_in_flight_at_once(breaker_class):
    """Two calls fail together (both are inside the remote call before either returns)."""
    recorder = Recorder()
    # FailureStreak: the streak survives the trip (only the window is reset), so each thread's
    # tripper fires whatever the other did meanwhile.
    cb = breaker_class(tripper=FailureStreak(1), listeners=[recorder])
    inside = threading.Barrier(2, timeout=WAIT)

    def fail() -> None:
        inside.wait()  # both calls are in flight: the protected call runs outside any lock
        raise ConnectionError("down")

    def request() -> None:
        with pytest.raises(ConnectionError):
            cb.call(fail)

    run_together(request, request)
    return cb, recorder.signals


def test_upstreams_breaker_trips_twice_for_one_trip_when_shared():
    # Each thread records its failure and runs the closed state's tripper, whichever state the
    # breaker is in by then: two transitions for one trip (the second one "open -> open").
    cb, signals = two_failures_in_flight_at_once(CircuitBreaker)
    assert len(signals) == 2
    assert signals[0] == ("closed", "open")
    assert cb.info().state == "open"


def test_ours_trips_once_the_second_outcome_being_stale():
    cb, signals = two_failures_in_flight_at_once(ThreadSafeCircuitBreaker)
    assert signals == [("closed", "open")]
    assert cb.info().state == "open"
    assert cb.info().metrics.total_count == 0  # the stale failure did not land in open's window


def transition_overtaken_by_another(breaker_class):
    """Thread A trips; before A's signal reaches the exporter, thread B resets the breaker."""
    registry = CollectorRegistry()
    a_notifying = threading.Event()
    b_started = threading.Event()
    b_done = threading.Event()
    own = breaker_class is ThreadSafeCircuitBreaker

    def gate(signal: Signal) -> None:
        if signal.new_state == "forced_open":  # A's transition, on its way to the listeners
            a_notifying.set()
            # Upstream: let B transition and notify in between. Ours: B cannot (the lock is
            # ours until A's listeners are done); let it try.
            assert (b_started if own else b_done).wait(WAIT)

    cb = breaker_class(listeners=[gate, PrometheusListener("raced", registry)])

    def a() -> None:
        cb.force_open()

    def b() -> None:
        assert a_notifying.wait(WAIT)
        b_started.set()
        cb.reset()
        b_done.set()

    run_together(a, b)
    return cb.info().state, shown(registry, "raced")


def test_upstreams_gauge_can_show_a_state_the_shared_breaker_left():
    state, exported = transition_overtaken_by_another(CircuitBreaker)
    assert state == "closed"  # B's reset came last
    assert exported == "forced_open"  # but A's signal reached the listener last


def test_ours_notifies_in_transition_order_so_the_gauge_is_the_breakers_state():
    state, exported = transition_overtaken_by_another(ThreadSafeCircuitBreaker)
    assert state == "closed"
    assert exported == "closed"


def test_protected_calls_run_concurrently():
    cb = ThreadSafeCircuitBreaker()
    together = threading.Barrier(8, timeout=WAIT)  # broken unless all 8 are inside at once
    results: list[int] = []
    run_together(*[lambda: results.append(cb.call(together.wait)) for _ in range(8)])
    assert sorted(results) == list(range(8))
    assert cb.info().metrics.total_count == 8


def test_a_stale_outcome_still_reaches_its_caller():
    cb = ThreadSafeCircuitBreaker(tripper=MinRequests(1) & FailureRate(0.5))
    in_call = threading.Event()
    tripped = threading.Event()
    results: list[str] = []

    def slow_success() -> str:
        in_call.set()
        assert tripped.wait(WAIT)
        return "late"

    def fail() -> None:
        raise ConnectionError("down")

    def slow() -> None:
        results.append(cb.call(slow_success))

    def trip() -> None:
        assert in_call.wait(WAIT)
        with pytest.raises(ConnectionError):
            cb.call(fail)
        tripped.set()

    run_together(slow, trip)
    assert results == ["late"]  # returned, though the breaker opened meanwhile
    assert cb.info().state == "open"
    assert cb.info().metrics.total_count == 0  # and not recorded in the open state's window


def test_same_surface_as_upstream():
    cb = ThreadSafeCircuitBreaker(retry=Cooldown(60.0))

    @cb
    def plain(x: int) -> int:
        return x + 1

    @cb(fallback=lambda error: f"fallback: {error}")
    def guarded() -> str:
        raise ConnectionError("down")

    assert plain(1) == 2
    assert guarded() == "fallback: down"
    assert cb.call_with_fallback(lambda: 1 / 0, lambda error: type(error).__name__) == (
        "ZeroDivisionError"
    )
    cb.force_open()
    assert cb.info().state == "forced_open"
    with pytest.raises(CallNotPermittedError, match=r"^Circuit breaker is forced open$"):
        plain(1)
    cb.disable()
    assert cb.info().state == "disabled"
    cb.metrics_only()
    assert cb.info().state == "metrics_only"
    cb.reset()
    assert cb.info().state == "closed"
    assert repr(cb) == "<ThreadSafeCircuitBreaker state='closed'>"


def test_a_protected_call_may_use_the_same_breaker():
    cb = ThreadSafeCircuitBreaker()
    assert cb.call(lambda: cb.call(lambda: "inner")) == "inner"


def test_watch_reads_its_health():
    registry = CollectorRegistry()
    cb = ThreadSafeCircuitBreaker()
    watch(cb, "watched", registry)
    cb.call(lambda: None)
    with pytest.raises(ConnectionError):
        cb.call(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    assert (
        registry.get_sample_value("circuit_breaker_failure_rate_ratio", {"circuit_name": "watched"})
        == 0.5
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_many_request_threads_one_breaker_the_export_is_exactly_what_it_did(backend):
    """32 threads through one breaker, tripping and recovering: the export equals its signals."""
    registry = CollectorRegistry()
    pipeline = SignalPipeline(max_buffer_size=16)  # small: some signals overflow
    recorder = Recorder()
    cb = ThreadSafeCircuitBreaker(
        tripper=MinRequests(4) & FailureRate(0.5),
        retry=Cooldown(1e-6),  # open lets the next call probe (almost) at once
        permit=All(),  # half-open lets every call through
        listeners=[recorder, PrometheusListener("shared", registry, pipeline=pipeline)],
    )
    start = threading.Barrier(32, timeout=WAIT)

    def fail() -> None:
        raise ConnectionError("down")

    def request(i: int) -> None:
        start.wait()
        for n in range(200):
            with contextlib.suppress(ConnectionError, CallNotPermittedError):
                cb.call(fail if (i + n) % 3 else (lambda: None))

    with ConsumerThread(pipeline, backend=backend) as consumer:
        run_together(*[lambda i=i: request(i) for i in range(32)])
        consumer.flush(WAIT)
        assert shown(registry, "shared") == cb.info().state
    transitions = Counter(recorder.signals)
    assert transitions  # it did trip, and recover
    assert all(old != new for old, new in transitions)  # no self-transition
    for (old, new), n in transitions.items():
        assert count(registry, "shared", old, new) == float(n)
    assert shown(registry, "shared") == cb.info().state


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork() here")
def test_a_child_forked_while_another_thread_transitions_the_breaker_can_use_it():
    # The lock a transition holds belongs to a thread the child does not have: forking then
    # must wait for the transition to end, or the child's breaker is locked for ever.
    result = run_python(
        CHILDREN / "fork_while_a_breaker_transitions.py", timeout=60, env=importing_tests()
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    child = next((line for line in lines if "child" in line), None)
    parent = next(line for line in lines if "child_exit" in line)
    assert parent["child_exit"] == 0
    assert child == {"child": "forced_open", "after_reset": "closed"}
