"""Section 12: what metering a passing call costs, against writing the two metrics directly.

Per breaker (fluxgate's sync ``CircuitBreaker`` and ``AsyncCircuitBreaker``, our
``AnyioCircuitBreaker``), three breakers of the same kind and settings (fluxgate's defaults), each
called with a function that returns at once, on the event-loop thread, with the consumer running:

* *bare*: the breaker as it is, no meter;
* *metered*: ``meter_calls(cb, name, registry, pipeline=pipeline)``: the call queues one item,
  the consumer writes ``circuit_breaker_calls_total`` and the duration histogram in batches;
* *direct*: the breaker's ``call`` wrapped in what a user would write without ``meter_calls``:
  time the call, then ``counter.labels(name, kind).inc()`` and
  ``histogram.labels(name, kind).observe(seconds)`` with prometheus_client, in the call.

Sides take turns batch by batch (``BATCH`` calls each, the order rotating every round), every
call timed on its own (``perf_counter_ns``, the timer's overhead subtracted); the figures are
each side's median and its cost over the bare median. That is the caller's time only: the
consumer's work happens between batches, in an untimed ``flush()``. So each batch is also
measured in process CPU time (``time.process_time_ns``: every thread, nothing of other
processes) from its first call until its ``flush()`` returned, divided by its calls: the total
CPU a call costs, consumer included (every side flushes alike; the median over batches).

After the run, both metered and direct counters and histogram counts must equal the calls made.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from fluxgate import AsyncCircuitBreaker, CircuitBreaker
from prometheus_client import CollectorRegistry, Counter, Histogram

from bench.harness import median, ns, percentile, timer_overhead
from fluxgate_stream import AnyioCircuitBreaker, SignalPipeline, meter_calls
from fluxgate_stream._catalogue import CALL_DURATION, CALLS
from fluxgate_stream.calls import DEFAULT_BUCKETS

SIDES = ("bare", "metered", "direct")
BREAKERS = ("CircuitBreaker", "AsyncCircuitBreaker", "AnyioCircuitBreaker")
#: Calls per side per turn: fits the default buffer, so every metered call queues on the stream.
BATCH = 128
NAME = "bench_api"
_SUCCESSFUL = "successful"
_FAILED = "failed"
_process_ns = time.process_time_ns
_perf = time.perf_counter


@dataclass
class CallsResult:
    """Per-call samples (ns) and per-batch CPU per call (ns), per side, of one breaker kind."""

    breaker: str
    calls: int = 0
    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    check: str = "exact"
    note: str = ""

    def median(self, side: str) -> float:
        """The side's median call, ns."""
        return median(self.samples.get(side, []))

    def p99(self, side: str) -> float:
        """The side's 99th-percentile call, ns."""
        return percentile(self.samples.get(side, []), 99)

    def over_bare(self, side: str) -> float:
        """What the side adds to the bare median call, as a fraction of it (0.1 = +10%)."""
        bare = self.median("bare")
        return (self.median(side) - bare) / bare if bare > 0 else float("nan")

    def share(self) -> float:
        """What metering adds over what the direct writes add (0.2: a fifth), caller time."""
        direct = self.median("direct") - self.median("bare")
        return (
            (self.median("metered") - self.median("bare")) / direct if direct > 0 else float("nan")
        )

    def cpu_per_call(self, side: str) -> float:
        """The side's median over batches of process CPU per call, consumer included, ns."""
        return median(self.cpu.get(side, []))

    def cpu_over_bare(self, side: str) -> float:
        """As ``over_bare``, for the total CPU per call."""
        bare = self.cpu_per_call("bare")
        return (self.cpu_per_call(side) - bare) / bare if bare > 0 else float("nan")

    def cpu_share(self) -> float:
        """As ``share``, for the total CPU per call."""
        bare = self.cpu_per_call("bare")
        direct = self.cpu_per_call("direct") - bare
        return (self.cpu_per_call("metered") - bare) / direct if direct > 0 else float("nan")


def passing() -> None:
    return None


async def apassing() -> None:
    return None


def _direct_sync(call: Callable[..., Any], counter: Counter, histogram: Histogram) -> Any:  # noqa: ANN401  # a breaker's call, any result
    """``call`` with both metrics written in it, as a user would without ``meter_calls``."""

    def metered(func: Callable[[], object]) -> object:
        start = _perf()
        try:
            result = call(func)
        except Exception:
            counter.labels(NAME, _FAILED).inc()
            histogram.labels(NAME, _FAILED).observe(_perf() - start)
            raise
        counter.labels(NAME, _SUCCESSFUL).inc()
        histogram.labels(NAME, _SUCCESSFUL).observe(_perf() - start)
        return result

    return metered


def _direct_async(call: Callable[..., Any], counter: Counter, histogram: Histogram) -> Any:  # noqa: ANN401  # as _direct_sync
    """``_direct_sync``, awaited."""

    async def metered(func: Callable[[], Awaitable[object]]) -> object:
        start = _perf()
        try:
            result = await call(func)
        except Exception:
            counter.labels(NAME, _FAILED).inc()
            histogram.labels(NAME, _FAILED).observe(_perf() - start)
            raise
        counter.labels(NAME, _SUCCESSFUL).inc()
        histogram.labels(NAME, _SUCCESSFUL).observe(_perf() - start)
        return result

    return metered


def _families(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The two metrics, as prometheus_client's own, with ``meter_calls``' names and buckets."""
    counter = Counter(CALLS.name, CALLS.help, CALLS.labels, registry=registry)
    histogram = Histogram(
        CALL_DURATION.name,
        CALL_DURATION.help,
        CALL_DURATION.labels,
        registry=registry,
        buckets=DEFAULT_BUCKETS,
    )
    return counter, histogram


def _counted(registry: CollectorRegistry) -> tuple[float, float]:
    """(successful calls counted, successful calls in the histogram) of ``NAME``."""
    labels = {"circuit_name": NAME, "kind": _SUCCESSFUL}
    count = registry.get_sample_value(CALLS.sample, labels) or 0.0
    timed = registry.get_sample_value(f"{CALL_DURATION.name}_count", labels) or 0.0
    return count, timed


async def _batch(
    call: Callable[..., Any], out: list[float], overhead: float, *, sync: bool
) -> None:
    if sync:
        for _ in range(BATCH):
            t0 = ns()
            call(passing)
            out.append(ns() - t0 - overhead)
    else:
        for _ in range(BATCH):
            t0 = ns()
            await call(apassing)
            out.append(ns() - t0 - overhead)


async def measure(backend: str, kind: str, calls: int) -> CallsResult:
    """About ``calls`` calls per side through breaker ``kind`` on ``backend`` (whole batches)."""
    out = CallsResult(kind)
    if kind == "AsyncCircuitBreaker" and backend == "trio":
        out.note = "n/a: asyncio only"
        return out
    cls: Callable[[], Any] = {
        "CircuitBreaker": CircuitBreaker,
        "AsyncCircuitBreaker": AsyncCircuitBreaker,
        "AnyioCircuitBreaker": AnyioCircuitBreaker,
    }[kind]
    sync = kind == "CircuitBreaker"
    pipeline = SignalPipeline()
    metered_registry, direct_registry = CollectorRegistry(), CollectorRegistry()
    bare, metered, direct = cls(), cls(), cls()
    wrap = _direct_sync if sync else _direct_async
    sides: dict[str, Callable[..., Any]] = {
        "bare": bare.call,
        "metered": metered.call,  # metered below: looked up once metering has begun
        "direct": wrap(direct.call, *_families(direct_registry)),
    }
    overhead = timer_overhead()
    rounds = max(1, calls // BATCH)
    out.calls = rounds * BATCH
    with meter_calls(metered, NAME, metered_registry, pipeline=pipeline):
        sides["metered"] = metered.call
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            for side, call in sides.items():  # warm-up: windows filled, series created, untimed
                await _batch(call, [], overhead, sync=sync)
                out.samples[side], out.cpu[side] = [], []
            await pipeline.flush()
            gc.collect()
            for r in range(rounds):
                order = SIDES[r % len(SIDES) :] + SIDES[: r % len(SIDES)]
                for side in order:
                    cpu0 = _process_ns()
                    await _batch(sides[side], out.samples[side], overhead, sync=sync)
                    await pipeline.flush()  # the consumer's work for this batch, every side alike
                    out.cpu[side].append((_process_ns() - cpu0) / BATCH)
            tg.cancel_scope.cancel()
        made = out.calls + BATCH  # with the warm-up batch
        for side, registry in (("metered", metered_registry), ("direct", direct_registry)):
            count, timed = _counted(registry)
            if count != made or timed != made:
                out.check = f"{side} WRONG: {count:.0f} counted, {timed:.0f} timed, of {made}"
    return out


async def every_breaker(backend: str, calls: int) -> list[CallsResult]:
    """Every breaker kind on ``backend``."""
    return [await measure(backend, kind, calls) for kind in BREAKERS]
