"""What the demo reports: each circuit's export read back from the registry, and the frames."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from fluxgate_stream import _catalogue as catalogue

if TYPE_CHECKING:
    from fluxgate.state import State
    from prometheus_client import CollectorRegistry

__all__ = [
    "RATE_WINDOW",
    "Backend",
    "CallRates",
    "CircuitReport",
    "DemoReport",
    "Exported",
    "RunsOn",
    "call_rates",
    "histogram_quantile",
    "read_exported",
]

Backend = Literal["asyncio", "trio"]
RunsOn = Literal["task", "thread"]

#: Real seconds the live rates and the p95 are computed over (the frames of about that long ago).
RATE_WINDOW = 3.0

_SUCCESSFUL, _FAILED, _IGNORED, _NOT_PERMITTED, _CANCELLED = catalogue.CALL_KINDS
_DURATION_BUCKET = f"{catalogue.CALL_DURATION.name}_bucket"


# -- reading back what is exported ------------------------------------------------------------


@dataclass
class Exported:
    """What the registry exports for one circuit.

    Attributes:
        states: every state whose ``circuit_breaker_state`` series is 1 (exactly one if healthy).
        transitions: ``circuit_breaker_state_transition_total`` by (old_state, new_state).
        seconds: ``circuit_breaker_state_seconds_total`` by state (empty unless timed).
        calls: ``circuit_breaker_calls_total`` by kind (empty unless metered).
        durations: ``circuit_breaker_call_duration_seconds``'s cumulative bucket counts by upper
            bound (``inf`` for ``+Inf``), summed over the kinds that have a duration.
    """

    states: list[str] = field(default_factory=list[str])
    transitions: dict[tuple[str, str], int] = field(default_factory=dict[tuple[str, str], int])
    seconds: dict[str, float] = field(default_factory=dict[str, float])
    calls: dict[str, int] = field(default_factory=dict[str, int])
    durations: dict[float, float] = field(default_factory=dict[float, float])

    @property
    def state(self) -> str | None:
        """The exported state, or ``None`` unless exactly one state series is 1."""
        return self.states[0] if len(self.states) == 1 else None


def read_exported(registry: CollectorRegistry) -> dict[str, Exported]:
    """Read every circuit's exported series from ``registry`` in one pass.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from fluxgate_stream import PrometheusListener
        >>> registry = CollectorRegistry()
        >>> _ = PrometheusListener("api", registry)
        >>> read_exported(registry)["api"].state
        'closed'
    """
    circuits: dict[str, Exported] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == catalogue.STATE.sample:
                exported = circuits.setdefault(sample.labels["circuit_name"], Exported())
                if sample.value == 1:
                    exported.states.append(sample.labels["state"])
            elif sample.name == catalogue.TRANSITIONS.sample:
                exported = circuits.setdefault(sample.labels["circuit_name"], Exported())
                key = (sample.labels["old_state"], sample.labels["new_state"])
                exported.transitions[key] = int(sample.value)
            elif sample.name == catalogue.STATE_SECONDS.sample:
                exported = circuits.setdefault(sample.labels["circuit_name"], Exported())
                exported.seconds[sample.labels["state"]] = sample.value
            elif sample.name == catalogue.CALLS.sample:
                exported = circuits.setdefault(sample.labels["circuit_name"], Exported())
                exported.calls[sample.labels["kind"]] = int(sample.value)
            elif sample.name == _DURATION_BUCKET:
                exported = circuits.setdefault(sample.labels["circuit_name"], Exported())
                bound = float(sample.labels["le"])  # "+Inf" reads as inf
                exported.durations[bound] = exported.durations.get(bound, 0.0) + sample.value
    return circuits


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q``-quantile (0-1) of a histogram, as Prometheus's ``histogram_quantile()`` has it.

    ``buckets`` maps each upper bound (``inf`` included) to its cumulative count. The quantile's
    bucket is the first whose count reaches ``q`` times the total; the value is interpolated
    linearly inside it (from 0 for the first bucket), and is the highest finite bound if it falls
    in ``+Inf``. ``None`` when the histogram counts nothing.

    Example:
        >>> histogram_quantile(0.95, {0.01: 50.0, 0.1: 100.0, math.inf: 100.0})
        0.091
        >>> histogram_quantile(0.5, {0.01: 0.0, math.inf: 4.0})
        0.01
        >>> histogram_quantile(0.5, {0.01: 0.0, math.inf: 0.0}) is None
        True
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return round(lower + (bound - lower) * (rank - below) / (count - below), 12)
        lower, below = bound, count
    return lower  # pragma: no cover  # the last bucket's count is the total: always reached


@dataclass(frozen=True)
class CallRates:
    """A circuit's calls over a span of time, from two reads of its exported series.

    Attributes:
        per_second: calls of every kind per second.
        rejected_per_second: ``not_permitted`` calls per second.
        p95: the 95th percentile of the calls' duration in seconds (``histogram_quantile`` of
            the bucket counts the span added), or ``None`` if no call ran to an outcome in it.
    """

    per_second: float
    rejected_per_second: float
    p95: float | None


def call_rates(then: Exported, now: Exported, seconds: float) -> CallRates | None:
    """What ``now`` added to ``then`` over ``seconds``; ``None`` for an empty span.

    Example:
        >>> then = Exported(calls={"successful": 10}, durations={0.01: 10.0, math.inf: 10.0})
        >>> now = Exported(
        ...     calls={"successful": 30, "not_permitted": 10},
        ...     durations={0.01: 20.0, math.inf: 30.0},
        ... )
        >>> call_rates(then, now, 2.0)
        CallRates(per_second=15.0, rejected_per_second=5.0, p95=0.01)
    """
    if seconds <= 0:
        return None
    calls = sum(now.calls.values()) - sum(then.calls.values())
    rejected = now.calls.get(_NOT_PERMITTED, 0) - then.calls.get(_NOT_PERMITTED, 0)
    added = {bound: n - then.durations.get(bound, 0.0) for bound, n in now.durations.items()}
    return CallRates(calls / seconds, rejected / seconds, histogram_quantile(0.95, added))


# -- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CircuitReport:
    """One circuit at one moment: the breaker's view and the exported one.

    Attributes:
        name: the ``circuit_name``.
        runs_on: ``"task"`` or ``"thread"``.
        phase: the dependency's current phase.
        state: the breaker's own state.
        exported_state: the exported state (``None`` unless exactly one state series is 1).
        transitions: transitions the breaker reported, by ``"old->new"``.
        exported_transitions: transitions exported, by ``"old->new"`` (zeros left out).
        calls: ``ok``, ``failed`` and ``rejected`` call counts.
        exported_seconds: exported seconds in each state (``time_in_state=True``).
        exported_calls: ``circuit_breaker_calls_total`` by kind (``meter_calls()``).
        rates: the exported calls over the last ``DemoReport.rate_window`` seconds (``None``
            before a frame to compare with).
    """

    name: str
    runs_on: RunsOn
    phase: str
    state: State
    exported_state: str | None
    transitions: dict[str, int]
    exported_transitions: dict[str, int]
    calls: dict[str, int]
    exported_seconds: dict[str, float] = field(default_factory=dict[str, float])
    exported_calls: dict[str, int] = field(default_factory=dict[str, int])
    rates: CallRates | None = None

    @property
    def open_share(self) -> float | None:
        """The exported share of time spent open so far, or ``None`` before any time counts."""
        total = math.fsum(self.exported_seconds.values())
        return self.exported_seconds.get("open", 0.0) / total if total > 0 else None

    @property
    def calls_match(self) -> bool:
        """Whether the exported call counts agree exactly with the calls the demo made.

        A failed call is ``failed``, or ``ignored`` when the breaker did not ask its tracker
        (``disabled``); the demo never cancels a call.
        """
        exported = self.exported_calls
        return (
            exported.get(_SUCCESSFUL, 0) == self.calls["ok"]
            and exported.get(_FAILED, 0) + exported.get(_IGNORED, 0) == self.calls["failed"]
            and exported.get(_NOT_PERMITTED, 0) == self.calls["rejected"]
            and exported.get(_CANCELLED, 0) == 0
        )

    @property
    def matches(self) -> bool:
        """Whether the export agrees exactly with the breaker: state, transitions and calls."""
        return (
            self.exported_state == self.state
            and self.exported_transitions == self.transitions
            and self.calls_match
        )


@dataclass(frozen=True)
class DemoReport:
    """A frame of the demo; the last one is its summary.

    Attributes:
        url: where the metrics are served.
        backend: ``"asyncio"`` or ``"trio"``.
        elapsed: real seconds since start.
        speed: schedule seconds per real second.
        circuits: one report per circuit.
        stopped_by: ``None`` while running; then ``"duration"``, ``"SIGINT"`` or ``"SIGTERM"``.
        rate_window: the real seconds each circuit's ``rates`` span (at most ``RATE_WINDOW``
            but for a frame's lateness; less early in the run).
    """

    url: str
    backend: Backend
    elapsed: float
    speed: float
    circuits: tuple[CircuitReport, ...]
    stopped_by: str | None = None
    rate_window: float = 0.0

    @property
    def matches(self) -> bool:
        """Whether every circuit's export agrees exactly with its breaker."""
        return all(circuit.matches for circuit in self.circuits)

    def to_json(self) -> str:
        """This report as one line of JSON."""
        return json.dumps(
            {
                "url": self.url,
                "backend": self.backend,
                "elapsed": round(self.elapsed, 3),
                "speed": self.speed,
                "stopped_by": self.stopped_by,
                "rate_window": round(self.rate_window, 3),
                "matches": self.matches,
                "circuits": {
                    circuit.name: {
                        "runs_on": circuit.runs_on,
                        "phase": circuit.phase,
                        "state": circuit.state,
                        "exported_state": circuit.exported_state,
                        "transitions": circuit.transitions,
                        "exported_transitions": circuit.exported_transitions,
                        "calls": circuit.calls,
                        "exported_seconds": circuit.exported_seconds,
                        "exported_calls": circuit.exported_calls,
                        "rates": None
                        if circuit.rates is None
                        else {
                            "calls_per_second": round(circuit.rates.per_second, 3),
                            "rejected_per_second": round(circuit.rates.rejected_per_second, 3),
                            "p95_seconds": circuit.rates.p95,
                        },
                        "matches": circuit.matches,
                    }
                    for circuit in self.circuits
                },
            },
            sort_keys=True,
        )
