"""Scrape cost of breaker health (``fluxgate_stream.health``) for 1,000 watched breakers.

``run(quick)`` returns a Markdown section body; ``python bench/bench_health.py [--quick]`` prints
it. Self-contained (standard library, prometheus_client, fluxgate, fluxgate_stream), so it runs
as a script as well as from the suite.

What is measured, all on real fluxgate ``CircuitBreaker``\\s:

* one scrape, ``generate_latest(registry)``, of a registry holding only the health of 1,000
  watched breakers, every round timed on its own (median and p99 over rounds): with full windows
  (20 calls each, a quarter failed, two ``SlowRate`` thresholds) and with empty windows;
* the same scrape's ``collect()`` alone: the share of the health collector itself, the rest
  being prometheus_client's text formatting;
* for scale, the same 1,000 circuits' state series written by ``PrometheusListener``;
* a breaker call, watched or not: ``watch()`` adds nothing to the call path, so the two must be
  equal within noise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fluxgate import CircuitBreaker
from fluxgate.trippers import FailureRate, MinRequests, SlowRate
from fluxgate.windows import CountWindow
from prometheus_client import CollectorRegistry, generate_latest

from fluxgate_stream import PrometheusListener
from fluxgate_stream.health import HealthWatch, collector_for, watch

BREAKERS = 1_000
CALLS_PER_WINDOW = 20


@dataclass(frozen=True)
class Timing:
    """Per-round wall times of one measurement, in ns."""

    rounds: list[int]

    @property
    def median(self) -> float:
        ordered = sorted(self.rounds)
        mid = len(ordered) // 2
        return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    @property
    def p99(self) -> float:
        ordered = sorted(self.rounds)
        rank = max(0, min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1))
        return float(ordered[rank])


def _time(fn: Callable[[], object], rounds: int, warmup: int) -> Timing:
    for _ in range(warmup):
        fn()
    gc.collect()
    out: list[int] = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return Timing(out)


def _ok() -> None:
    return None


def _fail() -> None:
    raise ConnectionError


def _breaker() -> CircuitBreaker:
    # Never trips here (MinRequests above the window); every successful call is "slow" for the
    # 1 ns threshold, none for the 1 s one, so both kinds of slow-call series are exported.
    return CircuitBreaker(
        window=CountWindow(100),
        tripper=MinRequests(1_000)
        & (FailureRate(0.5) | SlowRate(0.5, threshold=1e-9) | SlowRate(0.5, threshold=1.0)),
    )


def _fill(cb: CircuitBreaker) -> None:
    for i in range(CALLS_PER_WINDOW):
        with contextlib.suppress(ConnectionError):
            cb.call(_fail if i % 4 == 0 else _ok)


@dataclass
class Case:
    label: str
    registry: CollectorRegistry
    keep: list[object]  # the breakers and handles: held weakly by the collector

    def samples(self) -> int:
        return sum(len(family.samples) for family in self.registry.collect())


def _health_case(*, filled: bool) -> Case:
    registry = CollectorRegistry()
    keep: list[object] = []
    for i in range(BREAKERS):
        cb = _breaker()
        if filled:
            _fill(cb)
        handle: HealthWatch = watch(cb, f"circuit_{i:04d}", registry)
        keep += [cb, handle]
    label = "windows full (20 calls)" if filled else "windows empty"
    return Case(f"{BREAKERS:,} watched breakers, {label}", registry, keep)


def _listener_case() -> Case:
    registry = CollectorRegistry()
    keep: list[object] = [PrometheusListener(f"circuit_{i:04d}", registry) for i in range(BREAKERS)]
    return Case(f"{BREAKERS:,} `PrometheusListener`s' state series (for scale)", registry, keep)


def _fmt_ns(value: float) -> str:
    if value < 1_000:
        return f"{value:.0f} ns"
    if value < 1_000_000:
        return f"{value / 1_000:.2f} µs"
    return f"{value / 1_000_000:.2f} ms"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def _call_cost(rounds: int, calls: int) -> tuple[float, float]:
    """Median per-call ns of ``cb.call(_ok)``: an unwatched breaker, then a watched one."""
    registry = CollectorRegistry()
    plain, watched = _breaker(), _breaker()
    handle = watch(watched, "watched", registry)
    costs: dict[int, list[float]] = {id(plain): [], id(watched): []}
    for i in range(rounds):
        # Interleaved, first one then the other first, so drift and load hit both alike.
        for cb in (plain, watched) if i % 2 else (watched, plain):
            call = cb.call
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                call(_ok)
            costs[id(cb)].append((time.perf_counter_ns() - t0) / calls)
    handle.close()

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[len(ordered) // 2]

    return median(costs[id(plain)]), median(costs[id(watched)])


def run(quick: bool) -> str:  # noqa: FBT001 - the suite calls run(quick) positionally
    """Measure and return the Markdown table (``quick``: fewer rounds, same 1,000 breakers)."""
    rounds, warmup = (5, 1) if quick else (200, 10)
    cases = [_health_case(filled=True), _health_case(filled=False), _listener_case()]
    rows: list[list[object]] = []
    for case in cases:
        scrape = _time(lambda case=case: generate_latest(case.registry), rounds, warmup)
        collector = collector_for(case.registry) if "watched" in case.label else None
        collect = _time(collector.collect, rounds, warmup) if collector is not None else None
        size = len(generate_latest(case.registry))
        rows.append(
            [
                case.label,
                f"{case.samples():,}",
                f"{size / 1024:.0f} KiB",
                _fmt_ns(scrape.median),
                _fmt_ns(scrape.p99),
                _fmt_ns(scrape.median / BREAKERS),
                _fmt_ns(collect.median) if collect is not None else "n/a",
            ]
        )
    plain, watched = _call_cost(rounds=11 if quick else 101, calls=200 if quick else 2_000)
    mode = "quick (CI smoke: few rounds, not real figures)" if quick else "full"
    return (
        f"Scrape of a registry holding {BREAKERS:,} watched `CircuitBreaker`s "
        f"(`generate_latest`, {rounds} rounds after {warmup} warm-up, each timed on its own; "
        f"mode: {mode}). *collect()* is the health collector alone (reading every `info()` "
        "and building the families); the rest of a scrape is prometheus_client's formatting.\n\n"
        + _table(
            [
                "circuits",
                "samples",
                "size",
                "scrape median",
                "scrape p99",
                "per breaker",
                "collect() median",
            ],
            rows,
        )
        + "\n\nPer-call cost of `cb.call(f)` (median of batched rounds): unwatched "
        f"{_fmt_ns(plain)}, watched {_fmt_ns(watched)}. Both run the same code: `watch()` adds "
        "no listener, wrapper or work to the breaker, so any difference is measurement noise.\n"
    )


def companion_main(
    run: Callable[[bool], str], description: str, argv: Sequence[str] | None = None
) -> int:
    """The command line of a companion benchmark: ``[--quick]``, then print ``run(quick)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    args = parser.parse_args(argv)
    print(run(args.quick))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return companion_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
