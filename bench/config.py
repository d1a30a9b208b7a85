"""Sizes of every section, full and ``--quick``."""

from __future__ import annotations

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
        drain_repeats: drains per variant (the median is reported).
        big_buffer: the "large" ``max_buffer_size`` (holds a whole drain's signals).
        scaling: circuit counts of the scaling section.
        lag_seconds: duration of each steady-rate lag run.
        lag_rate: the steady rate, signals per second.
        memory_sizes: signal counts of the two memory runs.
        memory_threads: producer threads in the memory runs (plus the loop itself).
        flips: state flips per breaker configuration (two transitions each).
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


FULL = Config(
    quick=False,
    rounds=120,
    warmup=10,
    burst=256,
    circuits=100,
    drain_signals=100_000,
    drain_repeats=3,
    big_buffer=131_072,
    scaling=(1, 100, 10_000),
    lag_seconds=2.0,
    lag_rate=10_000,
    memory_sizes=(100_000, 1_000_000),
    memory_threads=4,
    flips=2_000,
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
)
