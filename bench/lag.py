"""Section 3: end-to-end lag (enqueue to applied) under a steady rate, loop thread and thread.

How "applied" is observed without touching the library: the registry is given, before any
listener, a ``circuit_breaker_state_transition`` Counter of a subclass whose ``inc`` records the
time; fluxgate-stream reuses the registry's existing Counter, as it does for any registry that
already holds its metrics. Each circuit's enqueue times wait in a FIFO; an ``inc(n)`` of that
circuit's counter on the consumer pops ``n`` of them, each giving one signal's lag. The counter
is the last write of a circuit's batch, so this is the time until the signal is fully applied.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import anyio
from anyio import to_thread
from prometheus_client import CollectorRegistry, Counter

from bench.harness import median, ns, percentile, timer_overhead
from bench.workload import CYCLE, Upstream
from fluxgate_stream import PrometheusListener, SignalPipeline


@dataclass
class LagResult:
    """Lags and producer costs of one steady run, ns."""

    sent: int
    lags: list[float] = field(default_factory=list)
    producer: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def applied(self) -> int:
        return len(self.lags)


class _Clock:
    """Per-circuit FIFOs of enqueue times, and the lags popped from them."""

    def __init__(self) -> None:
        self.queued: dict[str, deque[int]] = {}
        self.lags: list[float] = []

    def applied(self, name: str, n: int) -> None:
        now = ns()
        fifo = self.queued[name]
        for _ in range(n):
            self.lags.append(now - fifo.popleft())


def _timed_counter(clock: _Clock, registry: CollectorRegistry) -> None:
    class TimedCounter(Counter):
        """Records each increment's time and circuit for the lag measurement."""

        def labels(self, *values: str, **labels: str) -> TimedCounter:  # pyright: ignore[reportIncompatibleMethodOverride]  # narrower than Self, on purpose
            child = super().labels(*values, **labels)
            child.bench_circuit = values[0] if values else labels["circuit_name"]  # type: ignore[attr-defined]  # a plain attribute on our own child
            return child  # type: ignore[return-value]  # children are TimedCounters too

        def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
            super().inc(amount, exemplar)
            circuit = getattr(self, "bench_circuit", None)
            if circuit is not None:
                clock.applied(circuit, int(amount))

    TimedCounter(
        "circuit_breaker_state_transition",
        "Count of state transitions for circuit breakers",
        ["circuit_name", "old_state", "new_state"],
        registry=registry,
    )


def timed_setup(
    n_circuits: int, buffer: int
) -> tuple[_Clock, SignalPipeline, list[PrometheusListener]]:
    clock = _Clock()
    registry = CollectorRegistry()
    _timed_counter(clock, registry)
    pipeline = SignalPipeline(buffer)
    listeners = [
        PrometheusListener(f"lag-{i}", registry, pipeline=pipeline) for i in range(n_circuits)
    ]
    for listener in listeners:
        clock.queued[listener.name] = deque()
    return clock, pipeline, listeners


async def loop_steady(rate: int, seconds: float, n_circuits: int, buffer: int = 1024) -> LagResult:
    """A task on the loop thread sends ``rate`` signals/s, round-robin over the circuits."""
    clock, pipeline, listeners = timed_setup(n_circuits, buffer)
    total = int(rate * seconds)
    producer: list[float] = []
    overhead = timer_overhead()
    sent = 0
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        start = ns()
        while sent < total:
            due = min(total, (ns() - start) * rate // 1_000_000_000 + 1)
            while sent < due:
                listener = listeners[sent % n_circuits]
                signal = CYCLE[(sent // n_circuits) % len(CYCLE)]
                fifo = clock.queued[listener.name]
                t0 = ns()
                fifo.append(t0)  # before the call: a lone transition is applied in it
                listener(signal)
                producer.append(ns() - t0 - overhead)
                sent += 1
            await anyio.sleep(0.0002)
        await pipeline.flush()
        tg.cancel_scope.cancel()
    return LagResult(sent, clock.lags, producer)


async def thread_steady(
    rate: int, seconds: float, n_circuits: int, buffer: int = 1024
) -> LagResult:
    """A worker thread sends ``rate`` signals/s while the loop idles (the consumer sleeps)."""
    clock, pipeline, listeners = timed_setup(n_circuits, buffer)
    total = int(rate * seconds)
    producer: list[float] = []
    overhead = timer_overhead()

    def worker() -> int:
        start = ns()
        sent = 0
        while sent < total:
            due = min(total, (ns() - start) * rate // 1_000_000_000 + 1)
            while sent < due:
                listener = listeners[sent % n_circuits]
                signal = CYCLE[(sent // n_circuits) % len(CYCLE)]
                fifo = clock.queued[listener.name]
                t0 = ns()
                fifo.append(t0)  # before the call: the consumer may apply it at once
                listener(signal)
                producer.append(ns() - t0 - overhead)
                sent += 1
            time.sleep(0.0002)  # pacing the steady rate, not synchronisation
        return sent

    sent = 0
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        sent = await to_thread.run_sync(worker)
        await pipeline.flush()
        tg.cancel_scope.cancel()
    return LagResult(sent, clock.lags, producer)


def upstream_steady(rate: int, seconds: float, n_circuits: int) -> LagResult:
    """Upstream under the same pacing: its lag is its call (applied before it returns)."""
    upstream = Upstream.make(n_circuits)
    total = int(rate * seconds)
    producer: list[float] = []
    overhead = timer_overhead()
    start = ns()
    sent = 0
    while sent < total:
        due = min(total, (ns() - start) * rate // 1_000_000_000 + 1)
        while sent < due:
            listener = upstream.listeners[sent % n_circuits]
            signal = CYCLE[(sent // n_circuits) % len(CYCLE)]
            t0 = ns()
            listener(signal)
            producer.append(ns() - t0 - overhead)
            sent += 1
        time.sleep(0.0002)  # pacing the steady rate
    upstream.close()
    return LagResult(sent, list(producer), producer)


def summary(result: LagResult) -> tuple[float, float, float, float]:
    """(lag p50, lag p99, producer p50, producer p99), ns."""
    return (
        median(result.lags),
        percentile(result.lags, 99),
        median(result.producer),
        percentile(result.producer, 99),
    )
