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
* *Order is sequence order*, as for the gauge: the consumer takes each batch in the order of the
  pipeline's process-wide sequence numbers, so the state that accrues time is always the state
  the gauge shows. (Overflowing signals are merged into the batch in sequence order too; a
  signal queued by a thread preempted before it could hand it over may be late, as below.)
* *A late signal changes no interval.* A signal applied after a newer one of the same circuit (a
  thread preempted between queueing and handing over, or an overflow) still counts as a
  transition, but its time has already been given to the state the circuit was known to be in;
  totals are never moved between states and never decrease. In the same way, when one batch
  holds such a late signal together with newer ones, the stretch it covers goes to the state
  the circuit was in at its start.
* *The clock may go backwards* (``time.time()`` is the wall clock; NTP can step it): an interval
  whose end is earlier than its start counts 0 seconds, and counting resumes from the new
  reading, at the next signal or scrape, whichever comes first. Nothing is ever subtracted.
* *The exported value never decreases.* A scrape that lands between a transition and its
  application (usually well under the consumer's 1 ms batch window) counts the old state up to
  the scrape; when the transition is applied with its earlier timestamp, the export stays at what
  was shown until the exact total catches up with it (the next time that state accrues time).
  Until then the states' sum exceeds the wall time by that lag.
* *Start:* a circuit created with an ``initial_state`` (``"closed"`` by default) starts counting
  in that state when the first timed listener for it is created, or when a later listener first
  shows it; without one, at its first transition. Turning timing on for a circuit that already
  has a state starts counting that state at that moment; signals queued before then count from
  then at the earliest.
* *A timestamp that is not a finite number* is refused at the call site by every listener,
  timed or not, so none is ever queued; what is queued is a plain float. (Should one reach a
  clock anyway, the signal is placed at the moment the consumer applies it.)
* *``close()``* drops the circuit's time series, with its other series; the next transition starts
  counting again from 0.

Timing is a property of the circuit, which every listener of the same (registry, name) shares:
once one of them asks for it, it stays on for that circuit.

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): the open interval needs a custom collector,
which prometheus_client's ``MultiProcessCollector`` never calls, and a file-backed counter would
show a circuit stuck open as 0 seconds open. ``time_in_state=True`` raises ``RuntimeError``
there.

Concurrency model: a ``Span`` belongs to the tally being built, which its builder owns (the
consumer, or a fallback caller);
``StateClock.fold`` writes only to that tally and reads only the clock's ``start`` and
``start_seq``, fixed at creation. Every other use of a ``StateClock`` holds ``APPLY_LOCK``: the
writer applying a tally, and a scrape, which computes its samples under ``APPLY_LOCK`` (six
floats per timed circuit, no I/O) and builds the metric outside it. A scrape never blocks a
producer, which does not take ``APPLY_LOCK`` while a consumer runs.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, cast

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from fluxgate_stream._apply import run_deferred
from fluxgate_stream._catalogue import ALL_STATES, STATE_SECONDS

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable, Iterator

    from fluxgate.signal import Signal
    from fluxgate.state import State

    from fluxgate_stream._apply import Pending

__all__ = [
    "MULTIPROCESS_MESSAGE",
    "SECONDS_HELP",
    "SECONDS_NAME",
    "Span",
    "StateClock",
    "StateSecondsCollector",
    "finite_time",
]

SECONDS_NAME = STATE_SECONDS.name
SECONDS_HELP = STATE_SECONDS.help
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

    def __init__(self, seq: int, at: float, state: State) -> None:
        self.first_seq: int = seq
        self.last_seq: int = seq
        self.first_time: float = at
        self.last_time: float = at
        self.last_state: State = state
        self.seconds: dict[State, float] = {}

    def extend(self, seq: int, at: float, state: State) -> None:
        """Fold in a signal that arrived after the ones before (a late one changes no interval)."""
        if seq < self.last_seq:
            return
        elapsed = at - self.last_time
        if elapsed > 0:
            last = self.last_state
            self.seconds[last] = self.seconds.get(last, 0.0) + elapsed
        self.last_seq = seq
        self.last_time = at
        self.last_state = state


def finite_time(timestamp: object) -> float | None:
    """``timestamp`` as a float if it is a finite number of seconds, else ``None``."""
    if timestamp.__class__ is float:
        at = cast("float", timestamp)
        return None if at - at else at  # x - x is nan (true) for inf and nan, else 0.0
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        try:
            at = float(timestamp)
        except OverflowError:  # an int too large (listeners refuse it; never kill the consumer)
            return None
        return at if math.isfinite(at) else None
    return None


class StateClock:
    """The seconds one circuit has spent in each state, and the state it is in since when.

    ``fold`` runs wherever a tally is built (it only reads ``start``, fixed at creation); every
    other method: caller must hold APPLY_LOCK.

    Attributes:
        start: when timing began.
        start_seq: the sequence number taken then: a signal queued earlier (applied later)
            counts no time before ``start``.
        state: the state accruing time now, or ``None`` before the first transition.
        since: the timestamp ``state`` began (the reference for its open interval).
        seq: the sequence number of the signal that set ``state`` (-1: set at creation).
        seconds: closed intervals, per state.
        shown: the highest value exported per state, so that the export never decreases.
    """

    __slots__ = ("seconds", "seq", "shown", "since", "start", "start_seq", "state")

    def __init__(self, state: State | None, start: float, seq: int, start_seq: int) -> None:
        self.start: float = start
        self.start_seq: int = start_seq
        self.state: State | None = state
        self.since: float = start
        self.seq: int = seq
        self.seconds: dict[State, float] = {}
        self.shown: dict[State, float] = {}

    def fold(self, pending: Pending, seq: int, signal: Signal) -> None:
        """Fold a signal's timestamp into ``pending.folded`` (a ``Span``), unless not finite.

        A signal queued before timing began counts from ``start`` at the earliest. A signal
        left out here (a bad timestamp, which only an untimed listener could queue) is placed
        at the moment it is applied, by ``follow``.
        """
        at = finite_time(signal.timestamp)
        if at is None:
            return
        if seq < self.start_seq:
            at = max(at, self.start)
        span = cast("Span | None", pending.folded)  # only this method writes it
        if span is None:
            pending.folded = Span(seq, at, signal.new_state)
        else:
            span.extend(seq, at, signal.new_state)

    def begin(self, state: State, now: float) -> None:
        """Start counting ``state`` from ``now``, if nothing is counted yet (initial state)."""
        if self.state is None and self.seq < 0 and not self.seconds:
            self.state = state
            self.since = max(now, self.start)

    def follow(self, state: State, seq: int, timestamp: object, now: float) -> None:
        """Move to the gauge's state, set by signal ``seq`` that no span carried.

        Its time is its ``timestamp`` if that is a finite number, else ``now`` (when it is
        applied).
        """
        at = finite_time(timestamp)
        if at is None:
            at = now
        elif seq < self.start_seq:
            at = max(at, self.start)
        self.merge(Span(seq, at, state))

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
        state = self.state
        if state is None and not self.seconds:
            return None
        if state is not None and now < self.since:
            # The clock went back: keep what was shown, and count on from the new reading.
            self.seconds[state] = max(self.seconds.get(state, 0.0), self.shown.get(state, 0.0))
            self.since = now
        values = dict.fromkeys(ALL_STATES, 0.0)
        values.update(self.seconds)
        if state is not None:
            values[state] += now - self.since
        shown = self.shown
        for each, value in values.items():
            before = shown.get(each, 0.0)
            if value < before:
                values[each] = before
            else:
                shown[each] = value
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
        yield CounterMetricFamily(SECONDS_NAME, SECONDS_HELP, labels=STATE_SECONDS.labels)

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One sample per state of every timed circuit, open intervals up to now."""
        rows: list[tuple[str, dict[State, float]]] = []
        try:
            with self._lock:
                now = self._now()
                for name, clock in self._clocks():
                    values = clock.sample(now)
                    if values is not None:
                        rows.append((name, values))
        finally:
            run_deferred()  # a listener call that a signal handler made in the block, deferred
        family = CounterMetricFamily(SECONDS_NAME, SECONDS_HELP, labels=STATE_SECONDS.labels)
        for name, values in rows:
            for state, value in values.items():
                family.add_metric((name, state), value)
        yield family
