"""Section 4's scrape: ``generate_latest`` over many circuits, ours vs upstream's series."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from prometheus_client import REGISTRY

from bench.harness import median, ns
from bench.workload import CYCLE, Ours, Upstream, scrape


@dataclass
class ScrapeResult:
    """Median ``generate_latest`` time of each side's circuit-breaker metrics, ns."""

    circuits: int
    upstream_ns: float
    ours_ns: float
    upstream_bytes: int
    ours_bytes: int


def scrape_times(n_circuits: int, repeats: int) -> ScrapeResult:
    """Both sides hold ``n_circuits`` circuits that made one transition; scrape each."""
    ours = Ours.make(n_circuits)  # no consumer: applied directly
    upstream = Upstream.make(n_circuits)
    for listener in ours.listeners:
        listener(CYCLE[0])
    for listener in upstream.listeners:
        listener(CYCLE[0])
    up_times: list[float] = []
    our_times: list[float] = []
    up_bytes = our_bytes = 0
    gc.collect()
    for _ in range(repeats):
        t0 = ns()
        up_bytes = len(scrape(REGISTRY))
        t1 = ns()
        our_bytes = len(scrape(ours.registry))
        t2 = ns()
        up_times.append(t1 - t0)
        our_times.append(t2 - t1)
    upstream.close()
    return ScrapeResult(n_circuits, median(up_times), median(our_times), up_bytes, our_bytes)
