"""Every metric fluxgate-stream exports: its name, type, help text and labels, in one place.

The library registers its metrics from these entries, and the demo, the dashboard generator
(``deploy/grafana/dashboard.py``) and the tests read their names from here, so that a name is
spelled once. The state gauge and the transition counter are upstream's
(``fluxgate.listeners.prometheus``), name, help and labels alike: the drop-in exports exactly the
same series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from fluxgate.state import State

__all__ = [
    "ALL",
    "ALL_STATES",
    "APPLY_ERRORS",
    "AVERAGE_LATENCY",
    "BATCHES",
    "BUFFERED_CALLS",
    "BUFFER_SIZE",
    "CALLS",
    "CALL_DURATION",
    "CALL_DURATION_KINDS",
    "CALL_KINDS",
    "CONSUMER_RUNNING",
    "FAILURE_RATE",
    "HEALTH",
    "LAST_TRANSITION",
    "OWN_TRANSITIONS",
    "PATHS",
    "QUEUE_DEPTH",
    "REOPENS",
    "SELF_METRICS",
    "SHADOW_TRIPS",
    "SIGNALS",
    "SLOW_CALLS",
    "SLOW_CALL_RATE",
    "STATE",
    "STATE_SECONDS",
    "TRANSITIONS",
    "TRIPS",
    "TRIP_REASONS",
    "WAKEUPS",
    "MetricSpec",
]

ALL_STATES: tuple[State, ...] = get_args(State)
"""fluxgate's states in declaration order: closed, open, half_open, metrics_only, disabled,
forced_open. Every circuit exports one gauge series per state."""

#: The transitions a breaker makes on its own, from its calls and its retry timer: it trips
#: (closed -> open), it lets probes in (open -> half_open), a probe fails (half_open -> open) or
#: succeeds (half_open -> closed). Every other transition is a command (``reset()``,
#: ``force_open()``, ``disable()``, ``metrics_only()``). A circuit created with an
#: ``initial_state`` exports these four ``circuit_breaker_state_transition_total`` series at 0 from
#: its creation, so that ``rate()`` and ``increase()`` count its first transition of each kind.
OWN_TRANSITIONS: Final[tuple[tuple[State, State], ...]] = (
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "open"),
    ("half_open", "closed"),
)

#: The values of ``fluxgate_stream_signals_total``'s ``path`` label: the loop thread's stream,
#: the thread bridge, the overflow queue, and the synchronous fallback (no consumer).
PATHS: Final = ("stream", "bridge", "overflow", "direct")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family.

    Attributes:
        name: the family's name, as prometheus_client registers it (a counter's without
            ``_total``).
        kind: ``"gauge"``, ``"counter"`` or ``"histogram"``.
        help: its help text.
        labels: its label names, in order.
    """

    name: str
    kind: Literal["gauge", "counter", "histogram"]
    help: str
    labels: tuple[str, ...]

    @property
    def sample(self) -> str:
        """The name its samples are exposed under (a counter's with ``_total``).

        A histogram's are this name with ``_bucket``, ``_count`` and ``_sum``.
        """
        return f"{self.name}_total" if self.kind == "counter" else self.name


# -- the circuits' state: upstream's two metrics, and time in state ------------------------------

STATE: Final = MetricSpec(
    "circuit_breaker_state",
    "gauge",
    "Current state of the circuit breaker",
    ("circuit_name", "state"),
)
TRANSITIONS: Final = MetricSpec(
    "circuit_breaker_state_transition",
    "counter",
    "Count of state transitions for circuit breakers",
    ("circuit_name", "old_state", "new_state"),
)
STATE_SECONDS: Final = MetricSpec(
    "circuit_breaker_state_seconds",
    "counter",
    "Seconds circuit breakers have spent in each state",
    ("circuit_name", "state"),
)

# -- the calls through a breaker (fluxgate_stream.calls) ----------------------------------------

#: The values of ``circuit_breaker_calls_total``'s ``kind`` label, in this order: the call
#: returned; raised an exception the breaker's tracker counts; raised one it does not count (or
#: was not asked about); was refused (``CallNotPermittedError``: open, forced open, half-open
#: without a permit); ended by a ``BaseException`` that is not an ``Exception`` (a cancellation,
#: ``KeyboardInterrupt``), which fluxgate's window never records.
CALL_KINDS: Final = ("successful", "failed", "ignored", "not_permitted", "cancelled")

#: The kinds whose duration ``circuit_breaker_call_duration_seconds`` records: the calls that ran
#: to an outcome.
CALL_DURATION_KINDS: Final = CALL_KINDS[:3]

CALLS: Final = MetricSpec(
    "circuit_breaker_calls",
    "counter",
    "Calls through the circuit breaker, by outcome",
    ("circuit_name", "kind"),
)
CALL_DURATION: Final = MetricSpec(
    "circuit_breaker_call_duration_seconds",
    "histogram",
    "Duration of the calls through the circuit breaker that ran, by outcome",
    ("circuit_name", "kind"),
)

#: The values of ``circuit_breaker_trips_total``'s ``reason`` label that exist at 0 from the start:
#: the tripper conditions fluxgate ships (``FailureRate``, ``SlowRate``, ``AvgLatency``,
#: ``FailureStreak``) and ``other`` (any other condition, a custom tripper's). A trip for which
#: several held is labelled with all of them joined by ``+``, in this order
#: (``failure_rate+slow_rate``), so that each trip counts once.
TRIP_REASONS: Final = ("failure_rate", "slow_rate", "avg_latency", "failure_streak", "other")

TRIPS: Final = MetricSpec(
    "circuit_breaker_trips",
    "counter",
    "Transitions of the circuit breaker to open, by the tripper conditions that held",
    ("circuit_name", "reason"),
)
SHADOW_TRIPS: Final = MetricSpec(
    "circuit_breaker_shadow_trips",
    "counter",
    "Times the tripper would have opened the circuit breaker in metrics_only, once per crossing",
    ("circuit_name",),
)

# -- breaker health at scrape time (fluxgate_stream.health) ---------------------------------------

BUFFERED_CALLS: Final = MetricSpec(
    "circuit_breaker_buffered_calls",
    "gauge",
    "Calls in the circuit breaker's window, by outcome (the window resets on every transition)",
    ("circuit_name", "kind"),
)
FAILURE_RATE: Final = MetricSpec(
    "circuit_breaker_failure_rate_ratio",
    "gauge",
    "Failed calls / calls in the circuit breaker's window (absent while it is empty)",
    ("circuit_name",),
)
SLOW_CALLS: Final = MetricSpec(
    "circuit_breaker_slow_calls",
    "gauge",
    "Calls in the circuit breaker's window that took at least threshold_seconds",
    ("circuit_name", "threshold_seconds"),
)
SLOW_CALL_RATE: Final = MetricSpec(
    "circuit_breaker_slow_call_rate_ratio",
    "gauge",
    "Slow calls / calls in the circuit breaker's window, per SlowRate threshold "
    "(absent while it is empty)",
    ("circuit_name", "threshold_seconds"),
)
AVERAGE_LATENCY: Final = MetricSpec(
    "circuit_breaker_average_latency_seconds",
    "gauge",
    "Average duration of the calls in the circuit breaker's window, failures counting 0 s "
    "(absent while it is empty)",
    ("circuit_name",),
)
REOPENS: Final = MetricSpec(
    "circuit_breaker_consecutive_reopens",
    "gauge",
    "HALF_OPEN to OPEN reopens since the circuit breaker last closed",
    ("circuit_name",),
)
LAST_TRANSITION: Final = MetricSpec(
    "circuit_breaker_last_transition_timestamp_seconds",
    "gauge",
    "Unix time at which the circuit breaker entered its current state",
    ("circuit_name",),
)
#: The health families, in exposition order.
HEALTH: Final = (
    BUFFERED_CALLS,
    FAILURE_RATE,
    SLOW_CALLS,
    SLOW_CALL_RATE,
    AVERAGE_LATENCY,
    REOPENS,
    LAST_TRANSITION,
)

# -- the pipeline's self-metrics (fluxgate_stream.selfmetrics) ------------------------------------

SIGNALS: Final = MetricSpec(
    "fluxgate_stream_signals",
    "counter",
    "Signals and close() calls taken, by path",
    ("pipeline", "path"),
)
BATCHES: Final = MetricSpec(
    "fluxgate_stream_batches", "counter", "Tallies of signals applied to the metrics", ("pipeline",)
)
APPLY_ERRORS: Final = MetricSpec(
    "fluxgate_stream_apply_errors", "counter", "Circuit metric writes that raised", ("pipeline",)
)
WAKEUPS: Final = MetricSpec(
    "fluxgate_stream_wakeups",
    "counter",
    "Wake-ups of a sleeping consumer: by a signal from another thread, or by a flush()",
    ("pipeline",),
)
QUEUE_DEPTH: Final = MetricSpec(
    "fluxgate_stream_queue_depth",
    "gauge",
    "Signals waiting in the stream and the thread bridge",
    ("pipeline",),
)
BUFFER_SIZE: Final = MetricSpec(
    "fluxgate_stream_buffer_size",
    "gauge",
    "Capacity of the stream, and of the thread bridge",
    ("pipeline",),
)
CONSUMER_RUNNING: Final = MetricSpec(
    "fluxgate_stream_consumer_running",
    "gauge",
    "1 while the pipeline's consumer runs, else 0",
    ("pipeline",),
)
#: The self-metrics, in exposition order.
SELF_METRICS: Final = (
    SIGNALS,
    BATCHES,
    APPLY_ERRORS,
    WAKEUPS,
    QUEUE_DEPTH,
    BUFFER_SIZE,
    CONSUMER_RUNNING,
)

#: Every family fluxgate-stream can export.
ALL: Final = (
    STATE,
    TRANSITIONS,
    STATE_SECONDS,
    CALLS,
    CALL_DURATION,
    TRIPS,
    SHADOW_TRIPS,
    *HEALTH,
    *SELF_METRICS,
)
