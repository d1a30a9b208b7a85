"""The Prometheus series of each circuit: one gauge and one counter per registry, and the cap.

Metric names, help texts and labels are upstream's (``fluxgate.listeners.prometheus``), so
fluxgate-stream is a drop-in replacement. On the default registry we *share* upstream's
module-level metrics instead of registering our own: a process that also imports upstream's
listener then writes the same series instead of crashing with ``Duplicated timeseries``.

Concurrency model: every ``Circuit`` method and every mutable field is used with ``APPLY_LOCK``
held. ``APPLY_LOCK`` is process-wide because circuits are shared by every pipeline that writes to
the same registry; it is never held across an ``await`` and never taken by a producer on the
consumer's path.

Multiprocess mode (prometheus_client's ``PROMETHEUS_MULTIPROC_DIR``): values live in one file per
process and a ``MultiProcessCollector`` merges them, so registries mean nothing for the merged
view and every registry shares one family. The state gauge is our own, with
``multiprocess_mode="livesum"`` (each live process adds 1 to the state its circuit is in);
transition counters are upstream's, summed over every process that ever wrote them. Series
cannot be removed there: ``close()`` sets this process's six state series to 0 instead.

Module state that identifies series (the families and their circuits) survives
``importlib.reload``: the module's namespace is reused, and so are they.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, TypeVar, cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from fluxgate_stream._apply import APPLY_LOCK, SEQUENCE
from fluxgate_stream._catalogue import ALL_STATES, STATE, TRANSITIONS
from fluxgate_stream._checks import check_count
from fluxgate_stream._compat import (
    kept,
    labelnames,
    multiprocess,
    registered,
    upstream_state_gauge,
    upstream_transition_counter,
    value_class,
)
from fluxgate_stream.time_in_state import MULTIPROCESS_MESSAGE, StateClock, StateSecondsCollector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from fluxgate.signal import Signal
    from fluxgate.state import State

    from fluxgate_stream._apply import Pending
    from fluxgate_stream.time_in_state import Span

__all__ = ["Circuit", "CircuitLimitError", "circuit_for", "limit_circuits"]

_Metric = TypeVar("_Metric", Gauge, Counter)

GAUGE_NAME = STATE.name
GAUGE_HELP = STATE.help
COUNTER_NAME = TRANSITIONS.name
COUNTER_HELP = TRANSITIONS.help
GAUGE_LABELS = STATE.labels
COUNTER_LABELS = TRANSITIONS.labels
#: How the state gauges of several processes combine in multiprocess mode: summed over the live
#: processes, so each series counts the workers whose circuit is in that state.
GAUGE_MULTIPROCESS_MODE = "livesum"


class CircuitLimitError(ValueError):
    """A listener would add a circuit name past its registry's ``limit_circuits()`` cap."""


class Circuit:
    """The series of one ``circuit_name`` in one registry, and what has been applied to them.

    One instance exists per (registry, name): listeners that share both share it, so their
    signals coalesce and "latest state wins" holds across them.

    Attributes:
        name: the ``circuit_name`` label value.
        state: the state the gauge shows, or ``None`` while the circuit has no series.
        state_seq: sequence number of the signal that set ``state`` (-1: set by construction).
        closed_seq: sequence number of the latest applied ``close()`` (-1: never closed);
            signals older than it are void, their series having been dropped.
        clock: its time in each state, once a listener asked for it (see ``time_in_state``).
        fold: the clock's ``fold`` once there is a clock (the apply core's per-signal hook,
            which folds the signals' timestamps into a ``Span``), else ``None``.
        exclusive: whether only fluxgate-stream writes its gauge (we created the gauge). Not so
            on the default registry, whose gauge is upstream's, nor on a registry where
            upstream's listener registered it first.
    """

    __slots__ = (
        "_counters",
        "_gauges",
        "clock",
        "closed_seq",
        "counter",
        "exclusive",
        "fold",
        "gauge",
        "multiprocess",
        "name",
        "state",
        "state_seq",
    )

    def __init__(
        self,
        name: str,
        gauge: Gauge,
        counter: Counter,
        *,
        multiprocess: bool = False,
        exclusive: bool = False,
    ) -> None:
        self.name: str = name
        self.gauge: Gauge = gauge
        self.counter: Counter = counter
        self.multiprocess: bool = multiprocess
        self.exclusive: bool = exclusive
        self.state: State | None = None
        self.state_seq: int = -1
        self.closed_seq: int = -1
        self.clock: StateClock | None = None
        self.fold: Callable[[Pending, int, Signal], None] | None = None
        self._gauges: dict[State, Gauge] = {}
        self._counters: dict[tuple[State, State], Counter] = {}

    def __repr__(self) -> str:
        return f"<Circuit {self.name!r} state={self.state!r}>"

    #: Each part of a record, once written, leaves ``pending`` (see ``write``).
    resumable = True

    def write(self, pending: Pending) -> None:
        """Apply a tally's record: close first, then the latest state, the counts and the time.

        Caller must hold APPLY_LOCK. Resumable: each part leaves ``pending`` once written, so a
        write that an exception interrupted (a signal handler's ``SystemExit``) and that is run
        again writes only the rest (the gauge, if shown already, is skipped by its sequence).
        """
        if pending.close_seq >= 0:
            self.drop(pending.close_seq)
            pending.close_seq = -1
        if pending.state is not None and pending.state_seq > self.state_seq:
            self.show(pending.state, pending.state_seq)
        counts = pending.counts
        while counts:
            old, new = key = next(iter(counts))
            self.count(old, new, counts[key])
            del counts[key]
        clock = self.clock
        if clock is not None:
            span = cast("Span | None", pending.folded)  # what clock.fold made
            if span is not None:
                clock.merge(span)
                pending.folded = None
            if clock.seq < self.state_seq and self.state is not None:
                # The gauge moved on a signal no span carried (queued before timing was on, or
                # with a timestamp that is not a finite number): the clock follows it.
                clock.follow(self.state, self.state_seq, pending.state_time, time.time())

    def start_clock(self, now: float) -> None:
        """Count time in state from ``now`` on, in the state shown. Caller must hold APPLY_LOCK."""
        if self.clock is None:
            self.clock = StateClock(self.state, now, self.state_seq, next(SEQUENCE))
            self.fold = self.clock.fold
        elif self.state is not None:
            self.clock.begin(self.state, now)

    def show(self, state: State, seq: int) -> None:
        """Set the gauge to 1 for ``state``, 0 for the other five. Caller must hold APPLY_LOCK.

        When the gauge is ``exclusive`` and shows a state already, the other four are 0 already:
        two writes move the 1. Otherwise all six are written, as upstream's listener does.
        """
        gauges = self._gauges
        shown = self.state
        if shown is not None and self.exclusive and len(gauges) == len(ALL_STATES):
            if shown != state:
                gauges[shown].set(0)
                gauges[state].set(1)
        else:
            for each in ALL_STATES:
                child = gauges.get(each)
                if child is None:
                    child = gauges[each] = self.gauge.labels(self.name, each)
                child.set(1 if each == state else 0)
        self.state = state
        self.state_seq = seq

    def count(self, old: State, new: State, n: int) -> None:
        """Add ``n`` transitions ``old`` -> ``new``. Caller must hold APPLY_LOCK."""
        child = self._counters.get((old, new))
        if child is None:
            child = self._counters[old, new] = self.counter.labels(self.name, old, new)
        child.inc(n)

    def drop(self, seq: int) -> None:
        """Remove every series of this circuit, as upstream's ``close()`` does.

        Caller must hold APPLY_LOCK.

        Like upstream, every possible label set is removed, including those written by another
        writer of the same name (upstream's own listener on the default registry). In
        multiprocess mode, where prometheus_client cannot remove series, this process's six state
        series are set to 0 instead (it no longer counts in any state) and the transition
        counters keep their totals.
        """
        if self.multiprocess:
            for state in ALL_STATES:
                self.gauge.labels(self.name, state).set(0)
        else:
            for state in ALL_STATES:
                self.gauge.remove(self.name, state)
                for new in ALL_STATES:
                    self.counter.remove(self.name, state, new)
            self._gauges.clear()
            self._counters.clear()
        if self.clock is not None:
            self.clock.reset()
        self.state = None
        self.state_seq = -1
        self.closed_seq = max(self.closed_seq, seq)


class _Family:
    """The metrics of one registry, its circuits by name, and its cap on their number."""

    __slots__ = (
        "circuits",
        "counter",
        "exclusive",
        "gauge",
        "max_circuits",
        "multiprocess",
        "seconds",
    )

    def __init__(
        self,
        gauge: Gauge,
        counter: Counter,
        *,
        multiprocess: bool = False,
        exclusive: bool = False,
    ) -> None:
        self.gauge: Gauge = gauge
        self.counter: Counter = counter
        self.multiprocess: bool = multiprocess
        #: Whether we created the gauge, so that no other writer (upstream's listener) has it.
        self.exclusive: bool = exclusive
        self.circuits: dict[str, Circuit] = {}
        self.max_circuits: int | None = None
        #: The time-in-state collector, registered with the first timed circuit.
        self.seconds: StateSecondsCollector | None = None

    def clocks(self) -> Iterator[tuple[str, StateClock]]:
        """Every timed circuit's name and clock. Caller must hold APPLY_LOCK."""
        for circuit in self.circuits.values():
            if circuit.clock is not None:
                yield circuit.name, circuit.clock

    def count_seconds(self, registry: CollectorRegistry) -> None:
        """Register the time-in-state collector unless done. Caller must hold APPLY_LOCK.

        Raises:
            RuntimeError: prometheus_client runs in multiprocess mode.
            ValueError: ``registry`` already holds another collector named like our counter.
        """
        if self.multiprocess:
            raise RuntimeError(MULTIPROCESS_MESSAGE)
        if self.seconds is None:
            seconds = StateSecondsCollector(self.clocks, APPLY_LOCK)
            registry.register(seconds)
            self.seconds = seconds


# Keyed weakly so that a test's throw-away registry takes its circuits with it. Both are kept
# across importlib.reload, so a reload neither forgets circuits (their sequence numbers, their
# cap) nor creates a second metric object for the same series.
_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Family] = kept(
    "circuits.families", weakref.WeakKeyDictionary[CollectorRegistry, _Family]
)
# Multiprocess mode's one family, keyed by prometheus_client's value class (fixed per process).
_MULTIPROCESS_FAMILIES: weakref.WeakKeyDictionary[type, _Family] = kept(
    "circuits.multiprocess_families", weakref.WeakKeyDictionary[type, _Family]
)


def _family(registry: CollectorRegistry) -> _Family:
    """Return the registry's family, creating its metrics once. Caller must hold APPLY_LOCK."""
    if multiprocess():
        return _multiprocess_family()
    family = _FAMILIES.get(registry)
    if family is not None:
        return family
    if registry is REGISTRY:
        # Share upstream's module-level metrics: importing it registered them on REGISTRY.
        gauge = upstream_state_gauge()
        counter = upstream_transition_counter()
        exclusive = False
    else:
        exclusive = registered(registry, GAUGE_NAME) is None
        gauge = _existing_or_new(registry, Gauge, GAUGE_NAME, GAUGE_HELP, GAUGE_LABELS)
        counter = _existing_or_new(registry, Counter, COUNTER_NAME, COUNTER_HELP, COUNTER_LABELS)
    family = _FAMILIES[registry] = _Family(gauge, counter, exclusive=exclusive)
    return family


def _multiprocess_family() -> _Family:
    """Return multiprocess mode's one family. Caller must hold APPLY_LOCK.

    Its gauge is registered nowhere (a worker's registry is not what gets scraped, and upstream's
    gauge, whose mode is "all", holds the name on the default registry); its counter is
    upstream's, so that one object, never two, writes each counter value of this process.
    """
    values = value_class()
    family = _MULTIPROCESS_FAMILIES.get(values)
    if family is None:
        gauge = Gauge(
            GAUGE_NAME,
            GAUGE_HELP,
            GAUGE_LABELS,
            registry=None,
            multiprocess_mode=GAUGE_MULTIPROCESS_MODE,
        )
        counter = upstream_transition_counter()
        family = _MULTIPROCESS_FAMILIES[values] = _Family(
            gauge, counter, multiprocess=True, exclusive=True
        )
    return family


def _existing_or_new(
    registry: CollectorRegistry,
    kind: type[_Metric],
    name: str,
    documentation: str,
    labels: tuple[str, ...],
) -> _Metric:
    """Return the registry's ``name`` metric, registering it first if absent.

    Reusing what is there keeps a second listener, upstream's listener on the same registry, or a
    reloaded copy of this module from raising ``Duplicated timeseries``.

    Raises:
        ValueError: the registry holds a collector of another kind, or with other labels, under
            ``name``.
    """
    existing = registered(registry, name)
    if existing is None:
        return kind(name, documentation, labels, registry=registry)
    if not isinstance(existing, kind):
        raise ValueError(  # noqa: TRY004  # a registry conflict, as prometheus_client's own ValueError
            f"registry already has a {type(existing).__name__} named {name!r}; "
            f"fluxgate-stream needs a {kind.__name__} there"
        )
    found = labelnames(existing)
    if found != labels:
        raise ValueError(f"registry's {name!r} has labels {found}; fluxgate-stream needs {labels}")
    return existing


def circuit_for(
    registry: CollectorRegistry | None,
    name: str,
    initial_state: State | None,
    *,
    time_in_state: bool = False,
) -> Circuit:
    """Return the one ``Circuit`` for ``name`` in ``registry`` (``None``: the default registry).

    A circuit that has never had a series shows ``initial_state`` from now on (unless it is
    ``None``), so a circuit that never trips is still counted by ``sum(circuit_breaker_state)``.
    Any real transition outranks it, even one queued earlier. With ``time_in_state``, the
    circuit counts its time in each state from now on (``fluxgate_stream.time_in_state``).

    Raises:
        ValueError: the registry holds an unrelated collector named like one of ours, or ``name``
            is not valid UTF-8 text (it could not be exposed, and would break every scrape).
        CircuitLimitError: ``name`` is new and the registry already holds as many circuit names
            as ``limit_circuits()`` allows.
        RuntimeError: ``time_in_state`` in prometheus_client's multiprocess mode.
    """
    registry = REGISTRY if registry is None else registry
    with APPLY_LOCK:
        family = _family(registry)
        if time_in_state:
            family.count_seconds(registry)  # first: a failure leaves no circuit behind
        circuit = family.circuits.get(name)
        if circuit is None:
            _check_new_name(family, name)
            circuit = family.circuits[name] = Circuit(
                name,
                family.gauge,
                family.counter,
                multiprocess=family.multiprocess,
                exclusive=family.exclusive,
            )
        if initial_state is not None and circuit.state is None and circuit.closed_seq < 0:
            circuit.show(initial_state, -1)
        if time_in_state or circuit.clock is not None:
            circuit.start_clock(time.time())  # or, if timed already, count the initial state
        return circuit


def _shorten(name: str) -> str:
    return repr(name) if len(name) <= 60 else f"{name[:60]!r}... ({len(name)} characters)"


def _check_new_name(family: _Family, name: str) -> None:
    """Raise unless ``name`` may become a new circuit of ``family``. Caller holds APPLY_LOCK."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"name must be valid UTF-8 text, as Prometheus label values are: "
            f"{exc.reason} at index {exc.start}"
        ) from None
    limit = family.max_circuits
    if limit is not None and len(family.circuits) >= limit:
        raise CircuitLimitError(
            f"this registry already has {len(family.circuits)} circuit names, its limit; "
            f"refusing a new circuit_name {_shorten(name)} (see limit_circuits())"
        )


def limit_circuits(max_circuits: int | None, registry: CollectorRegistry | None = None) -> None:
    """Cap the number of distinct circuit names that listeners may use on ``registry``.

    A protection against label-cardinality explosions, for instance circuit names built from
    user input: past the cap, creating a listener for a *new* name raises ``CircuitLimitError``
    (before anything is queued or written), while listeners for names already in use keep
    working. Every name that a ``PrometheusListener`` was ever created for counts, ``close()``d
    or not, for the life of the process. ``None`` removes the cap. Lowering the cap below the
    number of names in use refuses new names only. In multiprocess mode, all registries share
    one cap, as they share their series.

    Args:
        max_circuits: the most circuit names allowed, at least 1; ``None`` for no cap.
        registry: the registry to cap; ``None`` means ``prometheus_client.REGISTRY``.

    Raises:
        TypeError: ``max_circuits`` is neither ``None`` nor an ``int``.
        ValueError: ``max_circuits`` is less than 1, or the registry holds an unrelated collector
            named like one of our metrics.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from fluxgate_stream import PrometheusListener
        >>> registry = CollectorRegistry()
        >>> limit_circuits(2, registry)
        >>> for tenant in ("a", "b"):
        ...     _ = PrometheusListener(f"tenant_{tenant}", registry)
        >>> PrometheusListener("tenant_c", registry)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fluxgate_stream.CircuitLimitError: this registry already has 2 circuit names, ...
    """
    check_count(max_circuits, "max_circuits", optional=True)
    with APPLY_LOCK:
        _family(REGISTRY if registry is None else registry).max_circuits = max_circuits
