"""Section 2 (and 4's drain half): how fast the consumer applies a backlog, vs upstream.

A backlog is queued while the consumer runs but cannot get the loop: either the loop thread
itself produces without awaiting, or threads produce while the loop thread is blocked joining
them. The drain is then timed from the end of production until ``flush()`` returns. Upstream has
no backlog: the same signals are applied directly, one call each, and timed.

Every series the workload writes exists beforehand (``warm()``, untimed, both sides), as in a
running service: creating a labelled child costs far more than writing one, and both sides would
pay it once per series.

Production ends with a full ``gc.collect()``, timed as part of it: queueing a backlog allocates one
long-lived tuple per signal, which makes CPython's cyclic collector due for a full collection
(tens of ms: it traverses the whole heap, the backlog included). Left alone, that collection lands
at random in the production or in the drain, and decides a drain's time more than the consumer
does; it is charged to the production that caused it, so the drain time is the consumer's own and
*produce + drain* still holds everything. Upstream's timed calls start after a ``gc.collect()``
too, and queue nothing.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass

import anyio

from bench.harness import Call, median, ns
from bench.workload import Ours, Plan, Upstream, pipeline_stats, schedule, stats_since


@dataclass
class DrainResult:
    """One backlog variant: times are medians over repeats, in ns."""

    signals: int
    circuits: int
    buffer: int
    produce_ns: float
    drain_ns: float
    check: str
    stats: dict[str, int] | None

    @property
    def rate(self) -> float:
        """Signals applied per second while draining."""
        return self.signals / (self.drain_ns / 1e9) if self.drain_ns > 0 else float("inf")


async def loop_backlog(n_signals: int, n_circuits: int, buffer: int, repeats: int) -> DrainResult:
    """The loop thread queues ``n_signals`` without awaiting, then awaits ``flush()``."""
    produce: list[float] = []
    drain: list[float] = []
    check = "exact"
    stats = None
    plan = schedule(n_signals, n_circuits)
    for _ in range(repeats):
        ours = Ours.make(n_circuits, buffer)
        warmed = ours.warm()
        before = pipeline_stats(ours.pipeline)  # the warm-up applied directly
        calls = ours.calls(plan)
        t0 = t1 = t2 = 0
        async with anyio.create_task_group() as tg:
            await tg.start(ours.pipeline.run)
            gc.collect()
            t0 = ns()
            for f, s in calls:
                f(s)
            gc.collect()  # the backlog's collection, charged to production (see the module doc)
            t1 = ns()
            await ours.pipeline.flush()
            t2 = ns()
            stats = stats_since(ours.pipeline, before)
            tg.cancel_scope.cancel()
        produce.append(t1 - t0)
        drain.append(t2 - t1)
        result = ours.check(warmed + plan)
        if result != "exact":
            check = result
    return DrainResult(n_signals, n_circuits, buffer, median(produce), median(drain), check, stats)


async def thread_backlog(
    n_signals: int, n_circuits: int, buffer: int, repeats: int, n_threads: int = 2
) -> DrainResult:
    """``n_threads`` threads queue ``n_signals`` while the loop thread blocks joining them.

    Thread ``k`` sends the signals of circuits ``i % n_threads == k``, so each circuit's signals
    stay in order and its latest state is known exactly.
    """
    produce: list[float] = []
    drain: list[float] = []
    check = "exact"
    stats = None
    plan = schedule(n_signals, n_circuits)
    for _ in range(repeats):
        ours = Ours.make(n_circuits, buffer)
        warmed = ours.warm()
        before = pipeline_stats(ours.pipeline)  # the warm-up applied directly
        shares: list[list[Call]] = [
            [(ours.listeners[i], s) for i, s in plan if i % n_threads == k]
            for k in range(n_threads)
        ]
        start = threading.Barrier(n_threads + 1)

        def produce_share(calls: list[Call], start: threading.Barrier = start) -> None:
            start.wait()
            for f, s in calls:
                f(s)

        threads = [threading.Thread(target=produce_share, args=(share,)) for share in shares]
        t0 = t1 = t2 = 0
        async with anyio.create_task_group() as tg:
            await tg.start(ours.pipeline.run)
            for thread in threads:
                thread.start()
            gc.collect()
            start.wait()
            t0 = ns()
            for thread in threads:
                thread.join()  # blocks the loop thread on purpose: the consumer cannot run
            gc.collect()  # as in loop_backlog
            t1 = ns()
            await ours.pipeline.flush()
            t2 = ns()
            stats = stats_since(ours.pipeline, before)
            tg.cancel_scope.cancel()
        produce.append(t1 - t0)
        drain.append(t2 - t1)
        result = ours.check(warmed + plan)
        if result != "exact":
            check = result
    return DrainResult(n_signals, n_circuits, buffer, median(produce), median(drain), check, stats)


def merge(results: list[DrainResult]) -> DrainResult:
    """One result of several repeats of the same variant: median times, the worst check."""
    first = results[0]
    wrong = [r.check for r in results if r.check != "exact"]
    return DrainResult(
        first.signals,
        first.circuits,
        first.buffer,
        median([r.produce_ns for r in results]),
        median([r.drain_ns for r in results]),
        wrong[0] if wrong else "exact",
        results[-1].stats,
    )


def upstream_direct(n_signals: int, n_circuits: int, repeats: int = 1) -> DrainResult:
    """Upstream applies the same signals directly: the time of all the calls."""
    plan: Plan = schedule(n_signals, n_circuits)
    times: list[float] = []
    check = "exact"
    for _ in range(repeats):
        upstream = Upstream.make(n_circuits)
        warmed = upstream.warm()
        calls = upstream.calls(plan)
        gc.collect()
        t0 = ns()
        for f, s in calls:
            f(s)
        times.append(ns() - t0)
        result = upstream.check(warmed + plan)
        upstream.close()
        if result != "exact":
            check = result
    return DrainResult(n_signals, n_circuits, 0, median(times), median(times), check, None)
