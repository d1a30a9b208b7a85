"""Section 5: peak memory of a storm through a tiny buffer, for two numbers of signals.

The target: the peak bounded by circuits, not signals (the big run's at most 1.5x the small's).

``n`` signals go through a ``max_buffer_size=8`` pipeline from ``threads`` threads and the loop
thread at once. Signals are generated on the fly (no list of ``n`` calls is kept), so what
``tracemalloc`` sees grow is the pipeline: its stream, bridge and overflow queue.
"""

from __future__ import annotations

import gc
import threading
import tracemalloc
from dataclasses import dataclass

import anyio
from anyio import to_thread
from anyio.lowlevel import checkpoint

from bench.harness import ns
from bench.workload import CYCLE, Ours, Plan, pipeline_stats


@dataclass
class MemoryResult:
    """One storm: peak traced memory above the baseline, bytes."""

    signals: int
    peak: int
    seconds: float
    check: str
    stats: dict[str, int] | None


def _share(producer: int, producers: int, n_circuits: int) -> list[int]:
    """The circuits a producer owns (so each circuit's order, hence latest state, is known)."""
    return [i for i in range(n_circuits) if i % producers == producer]


def _latest_plan(n_signals: int, producers: int, n_circuits: int) -> Plan:
    """A plan with the same per-circuit counts and latest states as the storm, for the check."""
    plan: Plan = []
    per = n_signals // producers
    for k in range(producers):
        circuits = _share(k, producers, n_circuits)
        width = len(circuits)
        # Circuit circuits[p] gets the signals j = p, p + width, ... < per; the last is what shows.
        for p, circuit in enumerate(circuits):
            sent = len(range(p, per, width))
            if sent:
                plan.extend((circuit, CYCLE[0]) for _ in range(sent - 1))
                plan.append((circuit, CYCLE[((per - 1 - p) // width) % len(CYCLE)]))
    return plan


async def storm(n_signals: int, n_threads: int, n_circuits: int = 100) -> MemoryResult:
    """Push ``n_signals`` (split evenly) from ``n_threads`` threads and the loop thread."""
    producers = n_threads + 1
    per = n_signals // producers
    ours = Ours.make(n_circuits, max_buffer_size=8)
    listeners = ours.listeners
    cycle = CYCLE
    width_of = [len(_share(k, producers, n_circuits)) for k in range(producers)]
    shares = [[listeners[i] for i in _share(k, producers, n_circuits)] for k in range(producers)]
    start = threading.Barrier(n_threads)

    def produce(k: int) -> None:
        own, width = shares[k], width_of[k]
        start.wait()
        for j in range(per):
            own[j % width](cycle[(j // width) % 5])

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(n_threads)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    t0 = ns()
    snapshot = None
    async with anyio.create_task_group() as tg:
        await tg.start(ours.pipeline.run)
        for thread in threads:
            thread.start()
        own, width = shares[n_threads], width_of[n_threads]
        for j in range(per):
            own[j % width](cycle[(j // width) % 5])
            if j % 64 == 63:
                await checkpoint()  # let the consumer (and the wake-ups) in
        for thread in threads:
            await to_thread.run_sync(thread.join)
        await ours.pipeline.flush()
        snapshot = pipeline_stats(ours.pipeline)
        tg.cancel_scope.cancel()
    seconds = (ns() - t0) / 1e9
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    check = ours.check(_latest_plan(per * producers, producers, n_circuits))
    return MemoryResult(per * producers, peak, seconds, check, snapshot)
