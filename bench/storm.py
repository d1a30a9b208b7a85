"""Section 10: a thread storm through real sync breakers, upstream's listener vs ours.

``threads`` worker threads transition ``circuits`` fluxgate ``CircuitBreaker``\\s (one listener
each) in a tight loop, ``force_open()`` then ``reset()``, each call a transition that notifies the
listener. Thread ``k`` owns the breakers ``i % threads == k`` (fluxgate's sync breaker is not
thread-safe), so every breaker ends each run closed and the export can be checked exactly. The
event loop runs our consumer meanwhile (idle for upstream, whose listener applies in the call);
the buffer is the default ``max_buffer_size``. Optionally a scraper thread calls
``generate_latest`` of the circuit-breaker metrics every 20 ms, as Prometheus would, but often.

Per run: every breaker call is timed (``perf_counter_ns``, timer overhead subtracted), giving the
p99 a breaker pays; the throughput is the transitions over the wall time from the start of the
threads until everything is applied (for ours, until ``flush()`` returns: the storm is only done
once the metrics show it); the process CPU time over the same span. Upstream and ours alternate
run by run, so drift in the machine's speed hits both alike; figures are medians over repeats.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio import to_thread
from fluxgate import CircuitBreaker
from prometheus_client import REGISTRY, CollectorRegistry

from bench.harness import median, ns, percentile, timer_overhead
from bench.workload import Ours, Upstream, scrape

SCRAPE_INTERVAL = 0.02


@dataclass
class StormRun:
    """One run: what was sent, how long it took, what the calls cost."""

    transitions: int
    seconds: float
    cpu_seconds: float
    latencies: list[float]
    scrapes: int
    check: str
    overflowed: int = 0  # ours: signals that took the overflow path (pipeline statistics)

    @property
    def rate(self) -> float:
        """Transitions per second, until applied."""
        return self.transitions / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class StormResult:
    """Every run of one (threads, scraper) configuration, per side (``upstream``, ``ours``)."""

    threads: int
    scraper: bool
    runs: dict[str, list[StormRun]] = field(default_factory=dict)

    def rate(self, side: str) -> float:
        """Median throughput over the side's runs, transitions per second."""
        return median([r.rate for r in self.runs[side]])

    def p99(self, side: str) -> float:
        """Median over runs of each run's p99 breaker-call latency, ns."""
        return median([percentile(r.latencies, 99) for r in self.runs[side]])

    def p50(self, side: str) -> float:
        """Median over runs of each run's median breaker-call latency, ns."""
        return median([median(r.latencies) for r in self.runs[side]])

    def cpu_per_transition(self, side: str) -> float:
        """Median over runs of the process CPU time per transition, ns."""
        return median([r.cpu_seconds * 1e9 / r.transitions for r in self.runs[side]])

    def overflow_share(self) -> float:
        """Median over ours' runs of the share of signals that took the overflow path."""
        return median([r.overflowed / r.transitions for r in self.runs["ours"]])

    def check(self) -> str:
        """``"exact"`` if every run of both sides exported exactly what the breakers did."""
        wrong = [r.check for runs in self.runs.values() for r in runs if r.check != "exact"]
        return wrong[0] if wrong else "exact"


@dataclass
class _Side:
    """One side's circuits and breakers, and how to check and scrape them."""

    name: str
    breakers: list[CircuitBreaker]
    transitions: Callable[[], float]
    exported: Callable[[int, dict[int, str], float], str]
    registry: CollectorRegistry
    ours: Ours | None = None


def _sides(n_circuits: int) -> tuple[_Side, _Side, Ours, Upstream]:
    ours = Ours.make(n_circuits)
    upstream = Upstream.make(n_circuits)
    mine = _Side(
        "ours",
        [CircuitBreaker(listeners=[listener]) for listener in ours.listeners],
        ours.transitions,
        ours.exported,
        ours.registry,
        ours,
    )
    theirs = _Side(
        "upstream",
        [CircuitBreaker(listeners=[listener]) for listener in upstream.listeners],
        upstream.transitions,
        upstream.exported,
        REGISTRY,
    )
    return mine, theirs, ours, upstream


def _per_thread(transitions: int, threads: int, n_circuits: int) -> int:
    """Calls per thread: whole double passes over its breakers (so every breaker ends closed)."""
    width = -(-n_circuits // threads)
    lap = 2 * width
    return max(lap, transitions // threads // lap * lap)


async def _run(side: _Side, threads: int, *, scraper: bool, transitions: int) -> StormRun:
    n_circuits = len(side.breakers)
    per = _per_thread(transitions, threads, n_circuits)
    overhead = timer_overhead(2_000)
    owned = [side.breakers[k::threads] for k in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop = threading.Event()
    scrapes = 0

    def work(k: int) -> None:
        ops = [(cb.force_open, cb.reset) for cb in owned[k]]
        width = len(ops)
        out = latencies[k]
        append = out.append
        start.wait()
        for j in range(per):
            op = ops[j % width][(j // width) & 1]
            t0 = ns()
            op()
            append(ns() - t0 - overhead)

    def scrape_loop() -> None:
        nonlocal scrapes
        while not stop.wait(SCRAPE_INTERVAL):
            scrape(side.registry)
            scrapes += 1

    def storm() -> None:
        workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for worker in workers:
            worker.start()
        start.wait()
        for worker in workers:
            worker.join()

    before = side.transitions()
    overflowed = side.ours.pipeline.statistics().overflow if side.ours is not None else 0
    gc.collect()
    scraping = threading.Thread(target=scrape_loop) if scraper else None
    if scraping is not None:
        scraping.start()
    t0, cpu0 = ns(), time.process_time()
    await to_thread.run_sync(storm)
    if side.ours is not None:
        await side.ours.pipeline.flush()
    seconds, cpu = (ns() - t0) / 1e9, time.process_time() - cpu0
    stop.set()
    if scraping is not None:
        scraping.join()
    sent = per * threads
    check = side.exported(sent, dict.fromkeys(range(n_circuits), "closed"), before)
    flat = [max(0.0, x) for each in latencies for x in each]
    if side.ours is not None:
        overflowed = side.ours.pipeline.statistics().overflow - overflowed
    return StormRun(sent, seconds, cpu, flat, scrapes, check, overflowed)


async def storms(
    thread_counts: tuple[int, ...], n_circuits: int, transitions: int, repeats: int
) -> list[StormResult]:
    """Every (threads, scraper) configuration, upstream and ours alternating, ``repeats`` each."""
    mine, theirs, ours, upstream = _sides(n_circuits)
    results: list[StormResult] = []
    async with anyio.create_task_group() as tg:
        await tg.start(ours.pipeline.run)
        for scraper in (False, True):
            for threads in thread_counts:
                result = StormResult(threads, scraper, {"upstream": [], "ours": []})
                for r in range(repeats):
                    order = (theirs, mine) if r % 2 == 0 else (mine, theirs)
                    for side in order:
                        run = await _run(side, threads, scraper=scraper, transitions=transitions)
                        result.runs[side.name].append(run)
                results.append(result)
        tg.cancel_scope.cancel()
    upstream.close()
    return results
