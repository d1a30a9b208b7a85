"""What every section drives: signals, circuits on both sides, and the exactness checks."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING

from fluxgate.listeners.prometheus import PrometheusListener as UpstreamListener
from fluxgate.signal import Signal
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from fluxgate_stream import ALL_STATES, PrometheusListener, SignalPipeline

if TYPE_CHECKING:
    from bench.harness import Call

#: A breaker's usual cycle: closed -> open -> half_open -> closed (and a re-open).
CYCLE: tuple[Signal, ...] = (
    Signal(old_state="closed", new_state="open", timestamp=0.0),
    Signal(old_state="open", new_state="half_open", timestamp=0.0),
    Signal(old_state="half_open", new_state="open", timestamp=0.0),
    Signal(old_state="open", new_state="half_open", timestamp=0.0),
    Signal(old_state="half_open", new_state="closed", timestamp=0.0),
)

#: The sample names both sides export (the restricted scrape asks for exactly these).
METRIC_NAMES = frozenset(
    {
        "circuit_breaker_state",
        "circuit_breaker_state_transition",
        "circuit_breaker_state_transition_total",
        "circuit_breaker_state_transition_created",
    }
)

#: (circuit index, signal) pairs, in the order they are sent.
Plan = list[tuple[int, Signal]]

_scenario = count()


def schedule(n_signals: int, n_circuits: int, seed: int = 1) -> Plan:
    """Return ``n_signals`` (circuit index, signal) pairs over ``n_circuits``, in a fixed order.

    Every circuit gets signals (round-robin over a shuffled order of circuits), each from
    ``CYCLE``, so the latest state of each circuit is known exactly.
    """
    rng = random.Random(seed)
    order = list(range(n_circuits))
    rng.shuffle(order)
    return [
        (order[i % n_circuits], CYCLE[(i // n_circuits) % len(CYCLE)]) for i in range(n_signals)
    ]


@dataclass
class Ours:
    """``n`` fluxgate-stream listeners on one fresh registry and one pipeline."""

    pipeline: SignalPipeline
    registry: CollectorRegistry
    listeners: list[PrometheusListener]

    @classmethod
    def make(cls, n: int, max_buffer_size: int = 1024, batch_window: float | None = None) -> Ours:
        """``n`` circuits; ``batch_window=None``: the pipeline's default window."""
        if batch_window is None:
            pipeline = SignalPipeline(max_buffer_size)
        else:
            pipeline = SignalPipeline(max_buffer_size, batch_window=batch_window)
        registry = CollectorRegistry()
        tag = next(_scenario)
        listeners = [
            PrometheusListener(f"c{tag}-{i}", registry, pipeline=pipeline) for i in range(n)
        ]
        return cls(pipeline, registry, listeners)

    def calls(self, plan: Sequence[tuple[int, Signal]]) -> list[Call]:
        return [(self.listeners[i], s) for i, s in plan]

    def warm(self) -> Plan:
        """Send every circuit each signal of ``CYCLE`` once (call before starting the consumer).

        Creates every series the workload will write, as a running service has them; returns
        what was sent, for the checks.
        """
        return warm(self.listeners)

    def transitions(self) -> float:
        """Sum of every circuit's transition counter."""
        return _transitions(self.registry, [lst.name for lst in self.listeners])

    def check(self, plan: Sequence[tuple[int, Signal]], before: float = 0.0) -> str:
        """Check the metrics against ``plan``: exact counts, and each circuit's latest state."""
        return _check(self.registry, [lst.name for lst in self.listeners], plan, before)

    def exported(self, transitions: int, latest: dict[int, str], before: float = 0.0) -> str:
        """As ``check_exported``: ``transitions`` counted since ``before``, ``latest`` shown."""
        names = [lst.name for lst in self.listeners]
        return check_exported(self.registry, names, transitions, latest, before)


@dataclass
class Upstream:
    """``n`` upstream listeners (upstream can only share its metrics on the default registry)."""

    listeners: list[UpstreamListener]

    @classmethod
    def make(cls, n: int) -> Upstream:
        tag = next(_scenario)
        return cls([UpstreamListener(f"u{tag}-{i}") for i in range(n)])

    def calls(self, plan: Sequence[tuple[int, Signal]]) -> list[Call]:
        return [(self.listeners[i], s) for i, s in plan]

    def warm(self) -> Plan:
        """As ``Ours.warm``."""
        return warm(self.listeners)

    def transitions(self) -> float:
        return _transitions(
            REGISTRY, [lst._name for lst in self.listeners]
        )  # upstream has no name accessor

    def check(self, plan: Sequence[tuple[int, Signal]], before: float = 0.0) -> str:
        return _check(REGISTRY, [lst._name for lst in self.listeners], plan, before)  # as above

    def exported(self, transitions: int, latest: dict[int, str], before: float = 0.0) -> str:
        """As ``Ours.exported``."""
        names = [lst._name for lst in self.listeners]  # upstream has no name accessor
        return check_exported(REGISTRY, names, transitions, latest, before)

    def close(self) -> None:
        """Drop this scenario's series from the default registry (upstream's own ``close()``)."""
        for listener in self.listeners:
            listener.close()


def warm(listeners: Sequence[Callable[[Signal], object]]) -> Plan:
    """Send each listener every signal of ``CYCLE`` once; return that as a plan."""
    plan: Plan = [(i, signal) for i in range(len(listeners)) for signal in CYCLE]
    for i, signal in plan:
        listeners[i](signal)
    return plan


def _samples(
    registry: CollectorRegistry, names: Sequence[str]
) -> tuple[float, dict[tuple[str, str], float]]:
    """One collect: (sum of transition counters, gauge value by (circuit, state)) for ``names``."""
    wanted = set(names)
    total = 0.0
    gauges: dict[tuple[str, str], float] = {}
    for metric in registry.collect():
        if metric.name == "circuit_breaker_state_transition":
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels["circuit_name"] in wanted:
                    total += sample.value
        elif metric.name == "circuit_breaker_state":
            for sample in metric.samples:
                name = sample.labels["circuit_name"]
                if name in wanted:
                    gauges[name, sample.labels["state"]] = sample.value
    return total, gauges


def _transitions(registry: CollectorRegistry, names: Sequence[str]) -> float:
    return _samples(registry, names)[0]


def _check(
    registry: CollectorRegistry,
    names: Sequence[str],
    plan: Sequence[tuple[int, Signal]],
    before: float,
) -> str:
    """Return ``"exact"`` or a description of what differs."""
    latest: dict[int, str] = {}
    for i, signal in plan:
        latest[i] = signal.new_state
    return check_exported(registry, names, len(plan), latest, before)


def check_exported(
    registry: CollectorRegistry,
    names: Sequence[str],
    transitions: int,
    latest: dict[int, str],
    before: float = 0.0,
) -> str:
    """``"exact"`` if the counters of ``names`` grew by ``transitions`` since ``before`` and
    circuit ``i`` shows ``latest[i]``; otherwise what differs."""
    total, gauges = _samples(registry, names)
    if total - before != transitions:
        return f"WRONG: {total - before:.0f} transitions counted, {transitions} sent"
    wrong = sum(
        1
        for i, state in latest.items()
        if any(
            gauges.get((names[i], each)) != (1.0 if each == state else 0.0) for each in ALL_STATES
        )
    )
    if wrong:
        return f"WRONG: {wrong} circuits show a stale state"
    return "exact"


def pipeline_stats(pipeline: SignalPipeline) -> dict[str, int] | None:
    """The pipeline's path counters (``stats()``), or ``None`` for a version without them."""
    stats: object = getattr(pipeline, "stats", None)
    if not callable(stats):
        return None
    snapshot: object = stats()
    if not isinstance(snapshot, dict):
        return None
    return {str(k): int(v) for k, v in snapshot.items()}  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]  # checked to be a dict just above


def stats_since(pipeline: SignalPipeline, before: dict[str, int] | None) -> dict[str, int] | None:
    """``pipeline_stats`` now, its counters less ``before``'s (what happened since)."""
    now = pipeline_stats(pipeline)
    if now is None or before is None:
        return now
    gauges = ("queued", "running")
    return {k: v if k in gauges else v - before.get(k, 0) for k, v in now.items()}


def scrape(registry: CollectorRegistry) -> bytes:
    """``generate_latest`` of only the circuit-breaker metrics of ``registry``."""
    return generate_latest(registry.restricted_registry(METRIC_NAMES))
