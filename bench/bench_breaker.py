"""Per-call cost of ``AnyioCircuitBreaker`` against fluxgate's ``AsyncCircuitBreaker``.

What is timed: ``await cb.call(passing)`` where ``passing`` is an ``async def`` that returns at
once, on a CLOSED breaker with fluxgate's default components (``CountWindow(100)``,
``MinRequests(100) & FailureRate(0.5)`` ...), so each call also pays for fluxgate's window and
tripper, as in production. The bare ``await passing()`` is timed too: the difference is the
breaker's overhead.

How: every call is timed on its own with ``time.perf_counter_ns``. Implementations take turns
in short bursts so that drift in machine load hits all of them alike. Warm-up bursts come first
(the window fills, caches warm) and are not counted. The garbage collector is off while timing.
The report gives the median and the 99th percentile per call. Upstream's class only runs on
asyncio; ours is also timed on trio.

Run ``python bench/bench_breaker.py [--quick]``, or call ``run(quick)`` for the Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from fluxgate import AsyncCircuitBreaker

from fluxgate_stream.anyio_breaker import AnyioCircuitBreaker

TARGET_RATIO = 1.2

Call = Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]


async def passing() -> None:
    return None


async def bare(func: Callable[[], Awaitable[None]]) -> None:
    await func()


@dataclass(frozen=True)
class Row:
    name: str
    backend: str
    median_ns: float
    p99_ns: float


async def _time_calls(
    calls: dict[str, Call], rounds: int, burst: int, warmup: int
) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in calls}
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for round_index in range(warmup + rounds):
            order = list(calls.items())
            shift = round_index % len(order)
            for name, call in order[shift:] + order[:shift]:
                kept = samples[name]
                for _ in range(burst):
                    start = clock()
                    await call(passing)
                    elapsed = clock() - start
                    if round_index >= warmup:
                        kept.append(elapsed)
    finally:
        gc.enable()
    return samples


def _summarise(name: str, backend: str, samples: list[int]) -> Row:
    percentiles = statistics.quantiles(samples, n=100, method="inclusive")
    return Row(name, backend, statistics.median(samples), percentiles[98])


async def _asyncio_rows(rounds: int, burst: int, warmup: int) -> list[Row]:
    upstream = AsyncCircuitBreaker()
    ours = AnyioCircuitBreaker()
    samples = await _time_calls(
        {
            "bare call": bare,
            "AsyncCircuitBreaker (fluxgate)": upstream.call,
            "AnyioCircuitBreaker": ours.call,
        },
        rounds,
        burst,
        warmup,
    )
    return [_summarise(name, "asyncio", values) for name, values in samples.items()]


async def _trio_rows(rounds: int, burst: int, warmup: int) -> list[Row]:
    ours = AnyioCircuitBreaker()
    samples = await _time_calls(
        {"bare call": bare, "AnyioCircuitBreaker": ours.call}, rounds, burst, warmup
    )
    return [_summarise(name, "trio", values) for name, values in samples.items()]


def run(quick: bool) -> str:  # noqa: FBT001 - the signature the bench report calls
    """Time the breakers and return the results as a Markdown section with a table."""
    rounds, burst, warmup = (60, 200, 10) if quick else (400, 250, 40)
    rows = anyio.run(_asyncio_rows, rounds, burst, warmup, backend="asyncio")
    rows += anyio.run(_trio_rows, rounds, burst, warmup, backend="trio")

    by_key = {(row.name, row.backend): row for row in rows}
    upstream = by_key["AsyncCircuitBreaker (fluxgate)", "asyncio"]
    ours = by_key["AnyioCircuitBreaker", "asyncio"]
    bare_asyncio = by_key["bare call", "asyncio"]
    ratio = ours.median_ns / upstream.median_ns
    overhead_ratio = (ours.median_ns - bare_asyncio.median_ns) / (
        upstream.median_ns - bare_asyncio.median_ns
    )

    lines = [
        f"### Circuit breaker per-call cost ({'quick' if quick else 'full'} run)",
        "",
        f"A passing call on a CLOSED breaker with fluxgate's default components; "
        f"{rounds} rounds of {burst} calls per implementation, after {warmup} warm-up rounds. "
        "Overhead: median minus the bare call's median on the same backend.",
        "",
        "| implementation | backend | median ns/call | p99 ns/call | median overhead |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        bare_row = by_key["bare call", row.backend]
        overhead = "-" if row is bare_row else f"{row.median_ns - bare_row.median_ns:,.0f} ns"
        cells = [row.name, row.backend, f"{row.median_ns:,.0f}", f"{row.p99_ns:,.0f}", overhead]
        lines.append(f"| {' | '.join(cells)} |")
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    lines += [
        "",
        f"AnyioCircuitBreaker / AsyncCircuitBreaker on asyncio, median per call: **{ratio:.2f}x** "
        f"(target <= {TARGET_RATIO}x: {verdict}); overhead alone: {overhead_ratio:.2f}x.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    print(run(quick=parser.parse_args().quick))


if __name__ == "__main__":
    main()
