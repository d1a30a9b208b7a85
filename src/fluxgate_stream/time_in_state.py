"""Time in state: seconds each circuit has spent in each state, from the signals' own timestamps.

``PrometheusListener(..., time_in_state=True)`` turns on, for its circuit, a counter

    ``circuit_breaker_state_seconds_total{circuit_name,state}``

with one series per fluxgate state. ``rate(circuit_breaker_state_seconds_total{state="open"}[1h])``
is then the fraction of the last hour the circuit spent open, exact even for an OPEN episode far
shorter than the scrape interval, which a 0/1 gauge sampled every 15 s cannot see.

How the seconds are counted (the rules the tests check):

* *Intervals come from timestamps, not from the consumer.* Each signal closes the interval of the
  state the circuit was in, from the previous signal's ``timestamp`` to its own, and opens one for
  its ``new_state``. When the consumer happens to apply a signal does not matter.
* *The current state's open interval is added at scrape time* (up to ``time.time()``), so a
  circuit stuck open for an hour shows an hour, not 0.
* *Order is sequence order*, as for the gauge: signals are taken in the order they were queued
  (the pipeline's process-wide sequence numbers), whatever path they took, so the state that
  accrues time is always the state the gauge shows.
* *A late signal changes no interval.* A signal applied after a newer one of the same circuit (a
  thread preempted between queueing and handing over, or an overflow) still counts as a
  transition, but its time has already been given to the state the circuit was known to be in;
  totals are never moved between states and never decrease. In the same way, when one batch
  holds such a late signal together with newer ones, the stretch it covers goes to the state
  the circuit was in at its start.
* *The clock may go backwards* (``time.time()`` is the wall clock; NTP can step it): an interval
  whose end is earlier than its start counts 0 seconds, and counting resumes from the new
  reading. Nothing is ever subtracted.
* *The exported value never decreases.* A scrape that lands between a transition and its
  application (usually well under the consumer's 1 ms batch window) counts the old state up to
  the scrape; when the transition is applied with its earlier timestamp, the export stays at what
  was shown until the exact total catches up with it (the next time that state accrues time).
* *Start:* a circuit created with an ``initial_state`` (``"closed"`` by default) starts counting
  in that state when the first timed listener for it is created; without one, at its first
  transition. Turning timing on for a circuit that already has a state starts counting that
  state at that moment.
* *``close()``* drops the circuit's time series, with its other series; the next transition starts
  counting again from 0.

Timing is a property of the circuit, which every listener of the same (registry, name) shares:
once one of them asks for it, it stays on for that circuit.

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): the open interval needs a custom collector,
which prometheus_client's ``MultiProcessCollector`` never calls, and a file-backed counter would
show a circuit stuck open as 0 seconds open. ``time_in_state=True`` raises ``RuntimeError``
there.

Concurrency model: every ``StateClock`` and ``Span`` is used with ``APPLY_LOCK`` held, by the
writer applying a tally (consumer, fallback) or by a scrape. A scrape computes its samples under
``APPLY_LOCK`` (six floats per timed circuit, no I/O) and builds the metric outside it; it never
blocks a producer, which does not take ``APPLY_LOCK`` while a consumer runs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from fluxgate_stream.states import ALL_STATES

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable, Iterator

    from fluxgate.signal import Signal
    from fluxgate.state import State

__all__ = [
    "MULTIPROCESS_MESSAGE",
    "SECONDS_HELP",
    "SECONDS_NAME",
    "Span",
    "StateClock",
    "StateSecondsCollector",
]

SECONDS_NAME = "circuit_breaker_state_seconds"
SECONDS_HELP = "Seconds circuit breakers have spent in each state"
MULTIPROCESS_MESSAGE = (
    "time_in_state=True does not work in prometheus_client's multiprocess mode "
    "(PROMETHEUS_MULTIPROC_DIR is set): the current state's open interval is added at scrape "
    "time by a custom collector, which the multiprocess collector never calls"
)


class Span:
    """The signals of one circuit in one tally, folded: where they start, end, and what between.

    Attributes:
        first_seq, first_time: sequence number and timestamp of the first signal.
        last_seq, last_time, last_state: the same for the last signal, and the state it entered.
        seconds: seconds per state between consecutive signals of the span.
    """

    __slots__ = ("first_seq", "first_time", "last_seq", "last_state", "last_time", "seconds")

    def __init__(self, seq: int, signal: Signal) -> None:
        self.first_seq = self.last_seq = seq
        self.first_time = self.last_time = signal.timestamp
        self.last_state: State = signal.new_state
        self.seconds: dict[State, float] = {}

    def extend(self, seq: int, signal: Signal) -> None:
        """Fold in a signal queued after the ones before (a late one changes no interval)."""
        if seq < self.last_seq:
            return
        elapsed = signal.timestamp - self.last_time
        if elapsed > 0:
            state = self.last_state
            self.seconds[state] = self.seconds.get(state, 0.0) + elapsed
        self.last_seq = seq
        self.last_time = signal.timestamp
        self.last_state = signal.new_state


class StateClock:
    """The seconds one circuit has spent in each state, and the state it is in since when.

    All methods: caller must hold APPLY_LOCK.

    Attributes:
        state: the state accruing time now, or ``None`` before the first transition.
        since: the timestamp ``state`` began (the reference for its open interval).
        seq: the sequence number of the signal that set ``state`` (-1: set at creation).
        seconds: closed intervals, per state.
        shown: the highest value exported per state, so that the export never decreases.
    """

    __slots__ = ("seconds", "seq", "shown", "since", "state")

    def __init__(self, state: State | None, since: float, seq: int) -> None:
        self.state: State | None = state
        self.since = since
        self.seq = seq
        self.seconds: dict[State, float] = {}
        self.shown: dict[State, float] = {}

    def merge(self, span: Span) -> None:
        """Account for a span of newer signals; a span that ends before ``seq`` is late."""
        if span.last_seq <= self.seq:
            return
        state = self.state
        if state is None:  # the first transition: nothing before it is known
            self._add_all(span.seconds)
        elif span.first_seq > self.seq:  # the span continues this clock: exact
            self._add(state, span.first_time - self.since)
            self._add_all(span.seconds)
        else:  # the span holds a late signal: its whole stretch goes to the known state
            self._add(state, span.last_time - self.since)
        self.state = span.last_state
        self.since = span.last_time
        self.seq = span.last_seq

    def _add(self, state: State, elapsed: float) -> None:
        if elapsed > 0:
            self.seconds[state] = self.seconds.get(state, 0.0) + elapsed

    def _add_all(self, seconds: dict[State, float]) -> None:
        for state, elapsed in seconds.items():
            self._add(state, elapsed)

    def reset(self) -> None:
        """Forget everything, as ``close()`` does; the next transition starts from 0."""
        self.state = None
        self.seq = -1
        self.seconds.clear()
        self.shown.clear()

    def sample(self, now: float) -> dict[State, float] | None:
        """Seconds per state up to ``now``, never below a previous sample; ``None`` if empty."""
        if self.state is None and not self.seconds:
            return None
        values = dict.fromkeys(ALL_STATES, 0.0)
        values.update(self.seconds)
        if self.state is not None and now > self.since:
            values[self.state] += now - self.since
        shown = self.shown
        for state, value in values.items():
            before = shown.get(state, 0.0)
            if value < before:
                values[state] = before
            else:
                shown[state] = value
        return values


class StateSecondsCollector(Collector):
    """Exports ``circuit_breaker_state_seconds_total`` for the timed circuits of one registry.

    Args:
        clocks: returns (circuit name, clock) for every timed circuit; called with ``lock`` held.
        lock: the lock that guards the clocks (``APPLY_LOCK``).
        now: the wall clock, ``time.time`` (the clock fluxgate stamps signals with).
    """

    def __init__(
        self,
        clocks: Callable[[], Iterable[tuple[str, StateClock]]],
        lock: threading.RLock,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._clocks = clocks
        self._lock = lock
        self._now = now

    def describe(self) -> Iterator[CounterMetricFamily]:
        """The family without samples, so that registering checks for a name clash only."""
        yield CounterMetricFamily(SECONDS_NAME, SECONDS_HELP, labels=("circuit_name", "state"))

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One sample per state of every timed circuit, open intervals up to now."""
        rows: list[tuple[str, dict[State, float]]] = []
        with self._lock:
            now = self._now()
            for name, clock in self._clocks():
                values = clock.sample(now)
                if values is not None:
                    rows.append((name, values))
        family = CounterMetricFamily(SECONDS_NAME, SECONDS_HELP, labels=("circuit_name", "state"))
        for name, values in rows:
            for state, value in values.items():
                family.add_metric((name, state), value)
        yield family
