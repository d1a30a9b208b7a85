"""Section 11: a trickle of isolated transitions, the total CPU each costs, and how soon it shows.

Breakers transition rarely, so this is the common case. One sync fluxgate ``CircuitBreaker``
transitions (``force_open()``, then ``reset()``) every ``gap`` (3 ms), on the event-loop thread
(a task that sleeps between transitions) or on a worker thread (which sleeps, while the loop
idles). Each run's process CPU time (``time.process_time``: every thread of the process, so
the consumer's wake-up, batch window and apply are included, and other processes' load is not)
is compared with the same run with no listener: the difference, divided by the transitions, is
what one transition costs in total. Rounds run every listener once, in an order that rotates, and
each round's differences are taken against that round's no-listener run; figures are medians.

A second run of ours times each transition from just before the call until its counter increment
returns (in the call for a lone transition, else on the consumer; as in section 3): the latency
until the metrics show it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio import to_thread
from fluxgate import CircuitBreaker

from bench.harness import median, ns, percentile
from bench.lag import timed_setup
from bench.workload import Ours, Upstream

GAP = 0.003

#: The listeners compared, in report order.
SIDES = ("none", "upstream", "ours", "ours, batch_window=0")


@dataclass
class TrickleResult:
    """Per-side CPU per round, seconds; ours' latencies until applied, ns."""

    where: str
    transitions: int
    cpu: dict[str, list[float]] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    check: str = "exact"

    def cost(self, side: str) -> float:
        """Median over rounds of (side's CPU - no listener's CPU) per transition, ns."""
        return median(
            [
                (mine - none) * 1e9 / self.transitions
                for mine, none in zip(self.cpu[side], self.cpu["none"], strict=True)
            ]
        )

    def none_cpu(self) -> float:
        """Median CPU of the no-listener run per transition, ns (what the loop itself costs)."""
        return median([c * 1e9 / self.transitions for c in self.cpu["none"]])


def _ops(cb: CircuitBreaker) -> tuple[Callable[[], None], Callable[[], None]]:
    return cb.force_open, cb.reset


async def _loop_driver(ops: tuple[Callable[[], None], ...], n: int, gap: float) -> None:
    for j in range(n):
        ops[j & 1]()
        await anyio.sleep(gap)


async def _thread_driver(ops: tuple[Callable[[], None], ...], n: int, gap: float) -> None:
    def drive() -> None:
        for j in range(n):
            ops[j & 1]()
            time.sleep(gap)  # the trickle's pacing, not synchronisation

    await to_thread.run_sync(drive)


async def trickle(where: str, transitions: int, rounds: int, gap: float = GAP) -> TrickleResult:
    """``where``: ``"loop thread"`` or ``"worker thread"``; ``transitions`` even."""
    driver = _loop_driver if where == "loop thread" else _thread_driver
    n = transitions + transitions % 2  # whole flips: every breaker ends closed
    out = TrickleResult(where, n, {side: [] for side in SIDES})
    ours = Ours.make(1)
    ours0 = Ours.make(1, batch_window=0)
    upstream = Upstream.make(1)
    breakers = {
        "none": CircuitBreaker(),
        "upstream": CircuitBreaker(listeners=[upstream.listeners[0]]),
        "ours": CircuitBreaker(listeners=[ours.listeners[0]]),
        "ours, batch_window=0": CircuitBreaker(listeners=[ours0.listeners[0]]),
    }
    sent = dict.fromkeys(SIDES, 0)
    async with anyio.create_task_group() as tg:
        await tg.start(ours.pipeline.run)
        await tg.start(ours0.pipeline.run)
        await driver(_ops(breakers["none"]), 2, gap)  # warm the driver's own path
        for r in range(rounds):
            order = SIDES[r % len(SIDES) :] + SIDES[: r % len(SIDES)]
            for side in order:
                ops = _ops(breakers[side])
                gc.collect()
                cpu0 = time.process_time()
                await driver(ops, n, gap)  # each transition's consumer work ends in its gap
                out.cpu[side].append(time.process_time() - cpu0)
                sent[side] += n
        await ours.pipeline.flush()
        await ours0.pipeline.flush()
        tg.cancel_scope.cancel()
    for name, side in (("ours", ours), ("ours, batch_window=0", ours0)):
        result = side.exported(sent[name], {0: "closed"})
        if result != "exact":
            out.check = f"{name}: {result}"
    result = upstream.exported(sent["upstream"], {0: "closed"})
    upstream.close()
    if result != "exact":
        out.check = f"upstream: {result}"
    out.lags = await _lags(where, n, gap)
    return out


async def _lags(where: str, n: int, gap: float) -> list[float]:
    """Ours (default settings): each transition's time until its counter increment returned."""
    clock, pipeline, listeners = timed_setup(1, 1024)
    listener = listeners[0]
    fifo = clock.queued[listener.name]
    cb = CircuitBreaker(listeners=[listener])
    ops = _ops(cb)

    def timed(op: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            fifo.append(ns())  # before the call: the consumer may apply it at once
            op()

        return call

    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        if where == "loop thread":
            await _loop_driver((timed(ops[0]), timed(ops[1])), n, gap)
        else:
            await _thread_driver((timed(ops[0]), timed(ops[1])), n, gap)
        await pipeline.flush()
        tg.cancel_scope.cancel()
    return clock.lags


def lag_summary(result: TrickleResult) -> tuple[float, float]:
    """(p50, p99) of ours' transition-to-applied latency, ns."""
    return median(result.lags), percentile(result.lags, 99)
