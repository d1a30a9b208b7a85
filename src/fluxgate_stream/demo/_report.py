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

__all__ = ["Backend", "CircuitReport", "DemoReport", "Exported", "RunsOn", "read_exported"]

Backend = Literal["asyncio", "trio"]
RunsOn = Literal["task", "thread"]


# -- reading back what is exported ------------------------------------------------------------


@dataclass
class Exported:
    """What the registry exports for one circuit.

    Attributes:
        states: every state whose ``circuit_breaker_state`` series is 1 (exactly one if healthy).
        transitions: ``circuit_breaker_state_transition_total`` by (old_state, new_state).
        seconds: ``circuit_breaker_state_seconds_total`` by state (empty unless timed).
    """

    states: list[str] = field(default_factory=list[str])
    transitions: dict[tuple[str, str], int] = field(default_factory=dict[tuple[str, str], int])
    seconds: dict[str, float] = field(default_factory=dict[str, float])

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
    return circuits


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

    @property
    def open_share(self) -> float | None:
        """The exported share of time spent open so far, or ``None`` before any time counts."""
        total = math.fsum(self.exported_seconds.values())
        return self.exported_seconds.get("open", 0.0) / total if total > 0 else None

    @property
    def matches(self) -> bool:
        """Whether the export agrees exactly with the breaker."""
        return self.exported_state == self.state and self.exported_transitions == self.transitions


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
    """

    url: str
    backend: Backend
    elapsed: float
    speed: float
    circuits: tuple[CircuitReport, ...]
    stopped_by: str | None = None

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
                        "matches": circuit.matches,
                    }
                    for circuit in self.circuits
                },
            },
            sort_keys=True,
        )
