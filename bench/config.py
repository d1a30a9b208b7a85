"""Sizes of every section, full and ``--quick``, and ``--scale`` in between."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """How big each section is.

    Attributes:
        quick: the CI smoke sizes (seconds in all), not the real figures.
        rounds: producer rounds per side (each round times ``burst`` calls one by one and
            ``burst`` calls as a batch), after ``warmup`` rounds that are thrown away.
        burst: calls per round; fits the default buffer, so loop-thread calls queue on the stream.
        circuits: circuits in sections 1-3, 5 and 6.
        drain_signals: signals queued before a drain is timed (the issue's 100,000).
        drain_repeats: drains per variant, upstream's and ours interleaved (medians reported).
        big_buffer: the "large" ``max_buffer_size`` (holds a whole drain's signals).
        scaling: circuit counts of the scaling section.
        lag_seconds: duration of each steady-rate lag run.
        lag_rate: the steady rate, signals per second.
        memory_sizes: signal counts of the two memory runs.
        memory_threads: producer threads in the memory runs (plus the loop itself).
        flips: operations per breaker, action and listener in the whole-call section.
        storm_transitions: transitions per storm run (split over its threads).
        storm_circuits: circuits (one sync ``CircuitBreaker`` each) a storm transitions.
        storm_threads: worker-thread counts of the storm runs.
        storm_repeats: runs per storm configuration and listener, interleaved (medians).
        trickle_transitions: isolated transitions per trickle run.
        trickle_rounds: trickle rounds (each runs every listener once, interleaved; medians).
        calls: passing calls per breaker and side in the calls section (whole batches of 128).
        companion_quick: the companion benchmarks (sections 7-9) at their smoke sizes.
    """

    quick: bool
    rounds: int
    warmup: int
    burst: int
    circuits: int
    drain_signals: int
    drain_repeats: int
    big_buffer: int
    scaling: tuple[int, ...]
    lag_seconds: float
    lag_rate: int
    memory_sizes: tuple[int, int]
    memory_threads: int
    flips: int
    storm_transitions: int
    storm_circuits: int
    storm_threads: tuple[int, ...]
    storm_repeats: int
    trickle_transitions: int
    trickle_rounds: int
    calls: int
    companion_quick: bool

    def scaled(self, factor: float) -> Config:
        """These sizes times ``factor`` (counts and durations; never below a working minimum).

        Circuit counts, buffer sizes and thread counts stay: they are what a figure is *of*.
        """

        def n(value: int, least: int = 1) -> int:
            return max(least, round(value * factor))

        return dataclasses.replace(
            self,
            quick=self.quick or factor < 1,
            rounds=n(self.rounds, 2),
            warmup=n(self.warmup),
            drain_signals=n(self.drain_signals, 2_000),
            drain_repeats=n(self.drain_repeats),
            lag_seconds=max(0.05, self.lag_seconds * factor),
            memory_sizes=(n(self.memory_sizes[0], 1_000), n(self.memory_sizes[1], 10_000)),
            flips=n(self.flips, 20),
            storm_transitions=n(self.storm_transitions, 2_000),
            storm_repeats=n(self.storm_repeats),
            trickle_transitions=n(self.trickle_transitions, 10),
            trickle_rounds=n(self.trickle_rounds),
            calls=n(self.calls, 512),
            companion_quick=self.companion_quick or factor < 1,
        )


FULL = Config(
    quick=False,
    rounds=120,
    warmup=10,
    burst=256,
    circuits=100,
    drain_signals=100_000,
    drain_repeats=5,
    big_buffer=131_072,
    scaling=(1, 100, 10_000),
    lag_seconds=2.0,
    lag_rate=10_000,
    memory_sizes=(100_000, 1_000_000),
    memory_threads=4,
    flips=2_000,
    storm_transitions=40_000,
    storm_circuits=1_000,
    storm_threads=(1, 2, 4),
    storm_repeats=3,
    trickle_transitions=100,
    trickle_rounds=7,
    calls=100_000,
    companion_quick=False,
)

QUICK = Config(
    quick=True,
    rounds=4,
    warmup=1,
    burst=64,
    circuits=10,
    drain_signals=2_000,
    drain_repeats=1,
    big_buffer=4_096,
    scaling=(1, 10, 100),
    lag_seconds=0.1,
    lag_rate=10_000,
    memory_sizes=(2_000, 20_000),
    memory_threads=4,
    flips=50,
    storm_transitions=2_000,
    storm_circuits=1_000,
    storm_threads=(1, 2, 4),
    storm_repeats=1,
    trickle_transitions=10,
    trickle_rounds=1,
    calls=1_024,
    companion_quick=True,
)
