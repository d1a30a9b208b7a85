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

Fork, in multiprocess mode (``gunicorn --preload`` imports the app in the master, then forks its
workers): a forked child counts in each circuit's current state from the start, and the process
that forked stops counting until its circuit's own next transition. prometheus_client gives a
child its own files (its value objects switch files when the pid changes) but they start empty:
the hooks at the end of this module (run by ``_apply``'s fork hooks, with ``APPLY_LOCK`` held)
re-write, in the child, each circuit's six rows into the child's files, and zero the parent's row
of the state it shows. Without them the
master would count in ``closed`` for ever, and a worker in no state until its first transition.
Single-process mode needs nothing: a child's metrics are a copy of its parent's.

Module state that identifies series (the families and their circuits) survives
``importlib.reload``: the module's namespace is reused, and so are they.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, TypeVar, cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from fluxgate_stream._apply import APPLY_LOCK, SEQUENCE, holding, while_forked
from fluxgate_stream._catalogue import ALL_STATES, OWN_TRANSITIONS, STATE, TRANSITIONS
from fluxgate_stream._checks import check_count, check_registry, shown
from fluxgate_stream._compat import (
    kept,
    labelnames,
    multiprocess,
    registered,
    unlocked,
    upstream_state_gauge,
    upstream_transition_counter,
    value_class,
    value_of,
    values_free,
)
from fluxgate_stream.time_in_state import MULTIPROCESS_MESSAGE, StateClock, StateSecondsCollector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from fluxgate.signal import Signal
    from fluxgate.state import State

    from fluxgate_stream._apply import Pending
    from fluxgate_stream._compat import Value
    from fluxgate_stream.time_in_state import Span

__all__ = ["Circuit", "CircuitLimitError", "circuit_for", "join", "limit_circuits"]

_log = logging.getLogger("fluxgate_stream")

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
        state: the state the gauge shows, or ``None`` while the circuit has no series. (In
            multiprocess mode, after this process forked, the state the circuit is in while this
            process counts in none: see ``uncount()``.)
        state_seq: sequence number of the signal that set ``state`` (-1: set by construction).
        closed_seq: sequence number of the latest applied ``close()`` (-1: never closed);
            signals older than it are void, their series having been dropped.
        clock: its time in each state, once a listener asked for it (see ``time_in_state``).
        fold: the clock's ``fold`` once there is a clock (the apply core's per-signal hook,
            which folds the signals' timestamps into a ``Span``), else ``None``.
        exclusive: whether only fluxgate-stream writes its gauge (we created the gauge). Not so
            on the default registry, whose gauge is upstream's, nor on a registry where
            upstream's listener registered it first.
        listeners: the listener objects of this circuit still alive (weakly held), to warn when
            a second one is created (see ``join``).
        warned: whether that warning was logged (once per circuit).
        own_counter: whether only fluxgate-stream writes its counter (we created it). Not so on
            the default registry nor in multiprocess mode, where the counter is upstream's.
        zeros: whether its ``OWN_TRANSITIONS`` counters are created at 0 along with its gauge
            (a listener with an ``initial_state`` was created for it).

    A metric child (the object behind one label set) is kept for the next write only where no
    one else can remove it: upstream's ``close()`` removes the children of a name from the
    metrics it shares with us, and a kept child would then be written unseen for ever. Where
    the metric is shared, every write asks the metric for its child (``labels()``), which
    recreates a removed one. What is kept is the child's value object (``_compat.value_of``),
    written as ``Gauge.set`` and ``Counter.inc`` write it once their checks pass (a float; an
    amount above 0): each of a transition's three writes is then one call, where those methods
    add three Python frames of checks to each.
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
        "listeners",
        "multiprocess",
        "name",
        "own_counter",
        "state",
        "state_seq",
        "warned",
        "zeros",
    )

    def __init__(self, name: str, family: _Family) -> None:
        self.name: str = name
        self.gauge: Gauge = family.gauge
        self.counter: Counter = family.counter
        self.multiprocess: bool = family.multiprocess
        self.exclusive: bool = family.exclusive
        self.own_counter: bool = family.own_counter
        self.zeros: bool = False
        self.state: State | None = None
        self.state_seq: int = -1
        self.closed_seq: int = -1
        self.clock: StateClock | None = None
        self.fold: Callable[[Pending, int, Signal], None] | None = None
        # The values of the children kept (see the class docstring), by state and by transition.
        self._gauges: dict[State, Value] = {}
        self._counters: dict[tuple[State, State], Value] = {}
        self.listeners: weakref.WeakSet[object] = weakref.WeakSet()
        self.warned: bool = False

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

    def unlocked(self, signal: Signal | None) -> bool:
        """Whether writing ``signal`` alone would find free each prometheus_client lock it takes.

        For a lone apply (see ``PipelineState``). Caller must hold APPLY_LOCK.

        Our writers all hold APPLY_LOCK, so a lock held now is a scrape's, upstream's listener's,
        or the calling thread's own (a signal handler that interrupted a scrape: taking it
        again would deadlock). ``False`` for a ``close()`` and in multiprocess mode: they take
        the consumer's path.
        """
        if signal is None or self.multiprocess:
            return False
        counter = self._counters.get((signal.old_state, signal.new_state))
        shown = self.kept_state()
        if counter is not None and shown is not None and self.own_counter:
            # The write's short path: show() sets the gauge children of the state shown and of
            # the new one, count() adds to this counter child, all kept here; it takes those
            # values' locks and no metric's.
            gauges = self._gauges
            return values_free(gauges[shown], gauges[signal.new_state], counter)
        name = self.name
        return unlocked(self.gauge, [(name, state) for state in ALL_STATES]) and unlocked(
            self.counter, [(name, signal.old_state, signal.new_state)]
        )

    def start_clock(self, now: float) -> None:
        """Count time in state from ``now`` on, in the state shown. Caller must hold APPLY_LOCK."""
        if self.clock is None:
            self.clock = StateClock(self.state, now, self.state_seq, next(SEQUENCE))
            self.fold = self.clock.fold
        elif self.state is not None:
            self.clock.begin(self.state, now)

    def kept_state(self) -> State | None:
        """The state shown, if ``show()`` writes through the gauge children kept, else ``None``.

        So it does when a state is shown on a gauge that is ours alone, every child in hand: two
        ``set()`` calls. Otherwise it looks the missing ones up (all six on a shared gauge) with
        ``labels()``, which takes the metric's lock. ``unlocked()`` relies on it. Caller must hold
        APPLY_LOCK.
        """
        state = self.state
        if state is not None and self.exclusive and len(self._gauges) == len(ALL_STATES):
            return state
        return None

    def show(self, state: State, seq: int) -> None:
        """Set the gauge to 1 for ``state``, 0 for the other five. Caller must hold APPLY_LOCK.

        When the gauge is ``exclusive`` and shows a state already, the other four are 0 already:
        two writes move the 1. Otherwise all six are written, as upstream's listener does. The
        ``OWN_TRANSITIONS`` counters at 0 come with the gauge (when ``zeros``): when it is
        created, and on every write where another writer could have removed them.
        """
        gauges = self._gauges
        shown = self.state
        kept = self.kept_state()
        if kept is not None:
            if kept != state:
                gauges[kept].set(0.0)
                gauges[state].set(1.0)
        elif self.exclusive:
            for each in ALL_STATES:
                value = gauges.get(each)
                if value is None:
                    value = gauges[each] = value_of(self.gauge.labels(self.name, each))
                value.set(1.0 if each == state else 0.0)
        else:  # a shared gauge: ask for each child, in case upstream's close() removed it
            for each in ALL_STATES:
                self.gauge.labels(self.name, each).set(1 if each == state else 0)
        # unlocked()'s short path relies on this being false whenever a state was shown and the
        # counter is ours: zero() calls labels(), which takes the counter's own lock.
        if self.zeros and (shown is None or not self.own_counter):
            self.zero()
        self.state = state
        self.state_seq = seq

    def uncount(self) -> None:
        """Stop counting this process in the live state gauge, until the next ``show()``.

        Multiprocess mode, in a process that has just forked: its row of the state shown goes to
        0; ``state`` stays (it is still the circuit's state, for the next transition and for the
        children forked later). Forgetting the rows makes the next ``show()`` write all six, even
        for the state that ``state`` already names. Caller must hold APPLY_LOCK.
        """
        shown = self.state
        if shown is not None:
            self.gauge.labels(self.name, shown).set(0)
            self._gauges.clear()

    def recount(self) -> None:  # pragma: no cover  # runs in forked children (their tests)
        """Write this process's six rows for the state the circuit is in (a forked child's files).

        Multiprocess mode, in a child just forked: prometheus_client has given it files of its
        own, which start empty. Called in the child before anything else runs (the parent held
        APPLY_LOCK across the fork, so no write of ours was half done).
        """
        shown = self.state
        if shown is not None:
            self._gauges.clear()
            self.show(shown, self.state_seq)

    def zero(self) -> None:
        """Create the ``OWN_TRANSITIONS`` counters at 0 where absent. Caller must hold APPLY_LOCK.

        A counter that exists keeps its value: creating a child is all ``labels()`` does.
        """
        for old, new in OWN_TRANSITIONS:
            self._counter(old, new)

    def _counter(self, old: State, new: State) -> Counter | Value:
        """The counter child of ``old`` -> ``new``, or its value kept if the counter is ours alone.

        ``unlocked()``'s short path relies on a kept value being returned as it is, no lock taken.
        Either way, ``inc(n)`` with ``n >= 1`` counts ``n`` transitions.
        """
        if not self.own_counter:
            return self.counter.labels(self.name, old, new)
        value = self._counters.get((old, new))
        if value is None:
            value = self._counters[old, new] = value_of(self.counter.labels(self.name, old, new))
        return value

    def count(self, old: State, new: State, n: int) -> None:
        """Add ``n`` transitions ``old`` -> ``new``. Caller must hold APPLY_LOCK.

        ``n`` is a tally's count, at least 1: a kept value's ``inc`` does not check, as
        ``Counter.inc`` would.
        """
        self._counter(old, new).inc(n)

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
        "own_counter",
        "seconds",
    )

    def __init__(
        self,
        gauge: Gauge,
        counter: Counter,
        *,
        multiprocess: bool = False,
        exclusive: bool = False,
        own_counter: bool = False,
    ) -> None:
        self.gauge: Gauge = gauge
        self.counter: Counter = counter
        self.multiprocess: bool = multiprocess
        #: Whether we created the gauge, so that no other writer (upstream's listener) has it.
        self.exclusive: bool = exclusive
        #: The same for the counter.
        self.own_counter: bool = own_counter
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
        exclusive = own_counter = False
    else:
        exclusive = registered(registry, GAUGE_NAME) is None
        own_counter = registered(registry, COUNTER_NAME) is None
        gauge = _existing_or_new(registry, Gauge, GAUGE_NAME, GAUGE_HELP, GAUGE_LABELS)
        counter = _existing_or_new(registry, Counter, COUNTER_NAME, COUNTER_HELP, COUNTER_LABELS)
    family = _FAMILIES[registry] = _Family(
        gauge, counter, exclusive=exclusive, own_counter=own_counter
    )
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
    Any real transition outranks it, even one queued earlier. With an ``initial_state``, the
    circuit's ``OWN_TRANSITIONS`` counters exist at 0 from now on (unless it was ``close()``d and
    has no series: then from its next transition), and come back with its series after every
    ``close()``. With ``time_in_state``, the
    circuit counts its time in each state from now on (``fluxgate_stream.time_in_state``).

    Raises:
        ValueError: the registry holds an unrelated collector named like one of ours. (``name``
            must have passed ``check_name``.)
        CircuitLimitError: ``name`` is new and the registry already holds as many circuit names
            as ``limit_circuits()`` allows.
        RuntimeError: ``time_in_state`` in prometheus_client's multiprocess mode.
    """
    registry = REGISTRY if registry is None else registry
    with holding():  # a call deferred meanwhile is applied as the block ends
        family = _family(registry)
        if time_in_state:
            family.count_seconds(registry)  # first: a failure leaves no circuit behind
        circuit = family.circuits.get(name)
        if circuit is None:
            _check_new_name(family, name)
            circuit = family.circuits[name] = Circuit(name, family)
        if initial_state is not None:
            circuit.zeros = True
            if circuit.state is not None:
                circuit.zero()
            elif circuit.closed_seq < 0:
                circuit.show(initial_state, -1)  # and the zeros
        if time_in_state or circuit.clock is not None:
            circuit.start_clock(time.time())  # or, if timed already, count the initial state
        return circuit


def join(circuit: Circuit, listener: object) -> None:
    """Note a new ``listener`` of ``circuit``; warn, once, if another one is alive already.

    Listeners that share a (registry, ``circuit_name``) write the same series, as upstream's do:
    the gauge shows the latest signal applied, whichever listener sent it. That is exact for one
    breaker, however many listeners it has; for several breakers behind one name (a breaker per
    thread) an open one can read as closed. Neither counting listeners nor refusing the second
    is exact (docs/guarantees.md says why), so the second live listener is told about, once.
    """
    with holding():
        others = len(circuit.listeners)
        circuit.listeners.add(listener)
        if others and not circuit.warned:
            circuit.warned = True
            _log.warning(
                "circuit_name %s now has %d live listeners in one registry; their series are "
                "shared, so if they serve several breakers the gauge shows whichever breaker "
                "moved last (an open one can read as closed): share one breaker "
                "(ThreadSafeCircuitBreaker across threads) or give each breaker its own name",
                _shorten(circuit.name),
                others + 1,
            )


def _shorten(name: str) -> str:
    return repr(name) if len(name) <= 60 else f"{name[:60]!r}... ({len(name)} characters)"


def _check_new_name(family: _Family, name: str) -> None:
    """Raise unless ``name`` may become a new circuit of ``family``. Caller holds APPLY_LOCK."""
    limit = family.max_circuits
    if limit is not None and len(family.circuits) >= limit:
        raise CircuitLimitError(
            f"this registry already has {len(family.circuits)} circuit names, its limit; "
            f"refusing a new circuit_name {shown(name)} (see limit_circuits())"
        )


def limit_circuits(max_circuits: int | None, registry: CollectorRegistry | None = None) -> None:
    """Cap the number of distinct circuit names that listeners may use on ``registry``.

    A protection against label-cardinality explosions, for instance circuit names built from
    user input: past the cap, creating a listener for a *new* name raises ``CircuitLimitError``
    (before anything is queued or written), while listeners for names already in use keep
    working. Every name that a ``PrometheusListener`` was ever created for counts, ``close()``d
    or not, for the life of the process. ``None`` removes the cap. Lowering the cap below the
    number of names in use refuses new names only. In multiprocess mode, all registries share
    one cap, as they share their series. A name costs 6 gauge series and, with an
    ``initial_state``, 4 counter series at 0 from its creation (``OWN_TRANSITIONS``); at most 30
    more counter series as it transitions.

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
    max_circuits = check_count(max_circuits, "max_circuits", optional=True)
    registry = check_registry(registry)
    with holding():
        _family(REGISTRY if registry is None else registry).max_circuits = max_circuits


# -- fork, in multiprocess mode --------------------------------------------------------------------
#
# Invariants: ``_apply``'s fork hooks hold APPLY_LOCK across the fork and run these two with it
# still held, so no write of ours is half done in the child and no other thread of the parent
# writes a circuit between the fork and ``uncount``. They do something only in multiprocess mode,
# once this process has multiprocess circuits, and never raise (a failure is logged).


def _forked_family() -> _Family | None:
    """This process's multiprocess family, if prometheus_client is in multiprocess mode."""
    return _MULTIPROCESS_FAMILIES.get(value_class()) if multiprocess() else None


def _uncount_after_fork() -> None:
    _after_fork(Circuit.uncount, "in the parent")


def _recount_after_fork() -> None:  # pragma: no cover  # runs in forked children (their tests)
    _after_fork(Circuit.recount, "in the child")


def _after_fork(move: Callable[[Circuit], None], where: str) -> None:
    """Apply ``move`` to every multiprocess circuit. Caller holds APPLY_LOCK (a fork hook)."""
    try:
        family = _forked_family()
        if family is not None:
            for circuit in list(family.circuits.values()):
                move(circuit)
    except Exception:  # noqa: BLE001  # a fork hook never raises: os.fork would only print it
        _log.exception("fluxgate-stream could not move the state gauge %s after os.fork()", where)


while_forked("circuits.state_gauge", in_parent=_uncount_after_fork, in_child=_recount_after_fork)
