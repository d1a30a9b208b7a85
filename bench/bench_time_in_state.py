"""What time in state (``PrometheusListener(..., time_in_state=True)``) costs, on vs off.

``run(quick)`` returns a Markdown section body; ``python -m bench.bench_time_in_state [--quick]``
prints it. Every figure is measured twice in the same run, on the same signals: with listeners
created with ``time_in_state=True`` and without. On asyncio (the pipeline's work is the same on
trio; the suite's other sections compare the backends).

* **Loop-thread producer**: a listener call on the event-loop thread with the consumer running
  (the timed listener also checks the signal's timestamp); batched, ``flush()`` between rounds.
* **Drain**: 100,000 signals over 100 circuits queued while the consumer cannot get the loop,
  timed until ``flush()`` returns (the timed consumer also folds timestamps and merges clocks).
* **Direct apply**: a listener call with no consumer (sync fallback): the whole apply per signal.
* **Scrape**: ``generate_latest`` of a registry holding 1,000 circuits (with it on, six more
  samples per circuit, the current state's open interval computed at scrape time).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

import anyio
from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry, generate_latest

from bench.bench_health import _fmt_ns, _table, _time, companion_main
from fluxgate_stream import PrometheusListener, SignalPipeline

CIRCUITS = 100
SCRAPED_CIRCUITS = 1_000
DRAINED = 100_000


def _listeners(
    registry: CollectorRegistry, n: int, pipeline: SignalPipeline | None, *, timed: bool
) -> list[PrometheusListener]:
    return [
        PrometheusListener(f"circuit_{i:04d}", registry, pipeline=pipeline, time_in_state=timed)
        for i in range(n)
    ]


def _signals(n: int) -> list[Signal]:
    """``n`` transitions flipping closed <-> open, a millisecond apart, ending now."""
    start = time.time() - n / 1000
    flips = (("closed", "open"), ("open", "closed"))
    return [
        Signal(old_state=old, new_state=new, timestamp=start + i / 1000)  # type: ignore[arg-type]  # literal states
        for i, (old, new) in enumerate(flips[i % 2] for i in range(n))
    ]


class _Setup:
    """A pipeline with its own registry and 100 listeners, timed or not, and the signals."""

    def __init__(self, n: int, *, timed: bool) -> None:
        self.pipeline = SignalPipeline(max_buffer_size=n)
        self.registry = CollectorRegistry()
        listeners = _listeners(self.registry, CIRCUITS, self.pipeline, timed=timed)
        self.pairs = [(listeners[i % CIRCUITS], signal) for i, signal in enumerate(_signals(n))]

    def check(self, expected: int) -> None:
        """Raise unless the counters hold exactly ``expected`` transitions in all."""
        total = sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == "circuit_breaker_state_transition_total"
        )
        if total != expected:
            raise AssertionError(f"counted {total} transitions, sent {expected}")

    def queue(self) -> int:
        """Make every listener call; return the ns it took."""
        t0 = time.perf_counter_ns()
        for listener, signal in self.pairs:
            listener(signal)
        return time.perf_counter_ns() - t0


async def _interleaved(n: int, rounds: int) -> dict[bool, tuple[float, float]]:
    """Per setup (off, on): median producer ns per call and median drain rate (signals/s).

    Each round queues ``n`` signals on the loop thread with the consumer running but unable to
    get the loop (no await in between), then times ``flush()``: the drain. Off and on take
    turns, round by round, so that drift and load hit both alike.
    """
    setups = {timed: _Setup(n, timed=timed) for timed in (False, True)}
    costs: dict[bool, list[float]] = {False: [], True: []}
    rates: dict[bool, list[float]] = {False: [], True: []}
    async with anyio.create_task_group() as tg:
        for setup in setups.values():
            await tg.start(setup.pipeline.run)
        for i in range(rounds + 1):
            for timed in (False, True) if i % 2 else (True, False):
                setup = setups[timed]
                gc.collect()
                queued = setup.queue()
                t0 = time.perf_counter_ns()
                await setup.pipeline.flush()
                drained = time.perf_counter_ns() - t0
                if i:  # round 0 warms up
                    costs[timed].append(queued / n)
                    rates[timed].append(n / (drained / 1e9))
        tg.cancel_scope.cancel()
    for setup in setups.values():
        setup.check((rounds + 1) * n)
    return {timed: (_median(costs[timed]), _median(rates[timed])) for timed in (False, True)}


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _direct(*, timed: bool, rounds: int, n: int) -> float:
    registry = CollectorRegistry()
    listeners = _listeners(registry, CIRCUITS, SignalPipeline(), timed=timed)
    signals = _signals(n)
    pairs = [(listeners[i % CIRCUITS], signal) for i, signal in enumerate(signals)]

    def calls() -> None:
        for listener, signal in pairs:
            listener(signal)

    return _time(calls, rounds, warmup=2).median / n


def _scrape(*, timed: bool, rounds: int) -> tuple[float, int]:
    """Median scrape ns, and the body's size."""
    registry = CollectorRegistry()
    listeners = _listeners(registry, SCRAPED_CIRCUITS, None, timed=timed)
    for i, listener in enumerate(listeners):  # a third of the circuits open, as time goes on
        if i % 3 == 0:
            listener(Signal(old_state="closed", new_state="open", timestamp=time.time()))
    scrape = _time(lambda: generate_latest(registry), rounds, warmup=2).median
    return scrape, len(generate_latest(registry))


def _ratio(on: float, off: float) -> str:
    return f"{on / off:.2f}x"


def run(quick: bool) -> str:  # noqa: FBT001 - the suite calls run(quick) positionally
    """Measure and return the Markdown table (``quick``: few rounds, small sizes)."""
    rounds = 3 if quick else 31
    n = 1_000 if quick else 10_000
    rows: list[list[object]] = []
    results = anyio.run(_interleaved, DRAINED if not quick else 10_000, 3 if quick else 15)
    (off_cost, off_rate), (on_cost, on_rate) = results[False], results[True]
    rows.append(
        [
            "loop-thread producer, per call",
            _fmt_ns(off_cost),
            _fmt_ns(on_cost),
            _ratio(on_cost, off_cost),
        ]
    )
    rows.append(
        [
            f"drain of {DRAINED if not quick else 10_000:,} queued signals, {CIRCUITS} circuits",
            f"{off_rate / 1e6:.2f} M/s",
            f"{on_rate / 1e6:.2f} M/s",
            f"{off_rate / on_rate:.2f}x the time",
        ]
    )
    off, on = _direct(timed=False, rounds=rounds, n=n), _direct(timed=True, rounds=rounds, n=n)
    rows.append(
        ["direct apply (no consumer), per call", _fmt_ns(off), _fmt_ns(on), _ratio(on, off)]
    )
    (off_scrape, off_size), (on_scrape, on_size) = (
        _scrape(timed=False, rounds=rounds),
        _scrape(timed=True, rounds=rounds),
    )
    rows.append(
        [
            f"scrape of {SCRAPED_CIRCUITS:,} circuits (`generate_latest`)",
            f"{_fmt_ns(off_scrape)}, {off_size / 1024:.0f} KiB",
            f"{_fmt_ns(on_scrape)}, {on_size / 1024:.0f} KiB",
            _ratio(on_scrape, off_scrape),
        ]
    )
    mode = "quick (CI smoke: few rounds, not real figures)" if quick else "full"
    return (
        f"Medians on asyncio, time in state off vs on, same signals (mode: {mode}). With it on, "
        "each circuit exports six more series, the current state's counted up to the scrape."
        "\n\n" + _table(["measure", "off", "on", "on / off"], rows) + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return companion_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
