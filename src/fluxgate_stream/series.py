"""The Prometheus series of each circuit: one gauge and one counter per registry.

Metric names, help texts and labels are upstream's (``fluxgate.listeners.prometheus``), so
fluxgate-stream is a drop-in replacement. On the default registry we *share* upstream's
module-level metrics instead of registering our own: a process that also imports upstream's
listener then writes the same series instead of crashing with ``Duplicated timeseries``.

Concurrency model: every ``Circuit`` method and every mutable field is used with ``APPLY_LOCK``
held. ``APPLY_LOCK`` is process-wide because circuits are shared by every pipeline that writes to
the same registry; it is never held across an ``await`` and never taken by a producer on the
consumer's path.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, TypeVar, cast

from fluxgate.listeners import prometheus as _upstream
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from fluxgate_stream.states import ALL_STATES
from fluxgate_stream.tally import APPLY_LOCK

if TYPE_CHECKING:
    from fluxgate.state import State

    from fluxgate_stream.tally import Pending

__all__ = ["Circuit", "circuit_for"]

_Metric = TypeVar("_Metric", Gauge, Counter)

GAUGE_NAME = "circuit_breaker_state"
GAUGE_HELP = "Current state of the circuit breaker"
COUNTER_NAME = "circuit_breaker_state_transition"
COUNTER_HELP = "Count of state transitions for circuit breakers"


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
    """

    __slots__ = (
        "_counters",
        "_gauges",
        "closed_seq",
        "counter",
        "gauge",
        "name",
        "state",
        "state_seq",
    )

    def __init__(self, name: str, gauge: Gauge, counter: Counter) -> None:
        self.name = name
        self.gauge = gauge
        self.counter = counter
        self.state: State | None = None
        self.state_seq = -1
        self.closed_seq = -1
        self._gauges: dict[State, Gauge] = {}
        self._counters: dict[tuple[State, State], Counter] = {}

    def __repr__(self) -> str:
        return f"<Circuit {self.name!r} state={self.state!r}>"

    def write(self, pending: Pending) -> None:
        """Apply a tally's record: close first, then the latest state, then the counts.

        Caller must hold APPLY_LOCK.
        """
        if pending.close_seq >= 0:
            self.drop(pending.close_seq)
        if pending.state is not None and pending.state_seq > self.state_seq:
            self.show(pending.state, pending.state_seq)
        for (old, new), n in pending.counts.items():
            self.count(old, new, n)

    def show(self, state: State, seq: int) -> None:
        """Set the gauge to 1 for ``state``, 0 for the other five. Caller must hold APPLY_LOCK."""
        for each in ALL_STATES:
            child = self._gauges.get(each)
            if child is None:
                child = self._gauges[each] = self.gauge.labels(self.name, each)
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
        writer of the same name (upstream's own listener on the default registry).
        """
        for state in ALL_STATES:
            self.gauge.remove(self.name, state)
            for new in ALL_STATES:
                self.counter.remove(self.name, state, new)
        self._gauges.clear()
        self._counters.clear()
        self.state = None
        self.state_seq = -1
        self.closed_seq = max(self.closed_seq, seq)


class _Family:
    """The gauge and counter of one registry, and its circuits by name."""

    __slots__ = ("circuits", "counter", "gauge")

    def __init__(self, gauge: Gauge, counter: Counter) -> None:
        self.gauge = gauge
        self.counter = counter
        self.circuits: dict[str, Circuit] = {}


# Keyed weakly so that a test's throw-away registry takes its circuits with it.
_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Family] = weakref.WeakKeyDictionary()


def _registered(registry: CollectorRegistry, name: str) -> object | None:
    # prometheus_client has no public lookup by name; this is the dict `register()` checks.
    return registry._names_to_collectors.get(name)  # pyright: ignore[reportPrivateUsage]  # no public lookup


def _family(registry: CollectorRegistry) -> _Family:
    """Return the registry's family, creating its metrics once. Caller must hold APPLY_LOCK."""
    family = _FAMILIES.get(registry)
    if family is not None:
        return family
    if registry is REGISTRY:
        # Share upstream's module-level metrics: importing it registered them on REGISTRY.
        gauge: Gauge = _upstream._STATE_GAUGE  # pyright: ignore[reportPrivateUsage]  # shared on purpose, pinned fluxgate<0.10
        counter: Counter = _upstream._STATE_TRANSITION  # pyright: ignore[reportPrivateUsage]  # as above
    else:
        gauge = _existing_or_new(registry, Gauge, GAUGE_NAME, GAUGE_HELP, ["circuit_name", "state"])
        counter = _existing_or_new(
            registry,
            Counter,
            COUNTER_NAME,
            COUNTER_HELP,
            ["circuit_name", "old_state", "new_state"],
        )
    family = _FAMILIES[registry] = _Family(gauge, counter)
    return family


def _existing_or_new(
    registry: CollectorRegistry,
    kind: type[_Metric],
    name: str,
    documentation: str,
    labels: list[str],
) -> _Metric:
    """Return the registry's ``name`` metric, registering it first if absent.

    Reusing what is there keeps a second listener, upstream's listener on the same registry, or a
    reloaded copy of this module from raising ``Duplicated timeseries``.

    Raises:
        ValueError: the registry holds a collector of another kind, or with other labels, under
            ``name``.
    """
    existing = _registered(registry, name)
    if existing is None:
        return kind(name, documentation, labels, registry=registry)
    if not isinstance(existing, kind):
        raise ValueError(  # noqa: TRY004  # a registry conflict, as prometheus_client's own ValueError
            f"registry already has a {type(existing).__name__} named {name!r}; "
            f"fluxgate-stream needs a {kind.__name__} there"
        )
    found = cast("tuple[str, ...]", existing._labelnames)  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]  # no public accessor
    if found != tuple(labels):
        raise ValueError(
            f"registry's {name!r} has labels {found}; fluxgate-stream needs {tuple(labels)}"
        )
    return existing


def circuit_for(
    registry: CollectorRegistry | None, name: str, initial_state: State | None
) -> Circuit:
    """Return the one ``Circuit`` for ``name`` in ``registry`` (``None``: the default registry).

    A circuit that has never had a series shows ``initial_state`` from now on (unless it is
    ``None``), so a circuit that never trips is still counted by ``sum(circuit_breaker_state)``.
    Any real transition outranks it, even one queued earlier.

    Raises:
        ValueError: the registry holds an unrelated collector named like one of ours.
    """
    with APPLY_LOCK:
        family = _family(REGISTRY if registry is None else registry)
        circuit = family.circuits.get(name)
        if circuit is None:
            circuit = family.circuits[name] = Circuit(name, family.gauge, family.counter)
        if initial_state is not None and circuit.state is None and circuit.closed_seq < 0:
            circuit.show(initial_state, -1)
        return circuit
