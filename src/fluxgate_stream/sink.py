"""Custom metrics on the consumer: ``StreamingListener`` hands coalesced transitions to your sink.

The streaming form of the "Custom Metrics" section of fluxgate's Prometheus listener
documentation: instead of writing metrics in the breaker's call path, a ``SignalSink`` receives,
on the pipeline's consumer, what happened to its circuit since the last write: the transitions
counted per (old_state, new_state), the latest state, and whether ``close()`` came first.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fluxgate_stream._checks import check_name, check_sink
from fluxgate_stream.listener import QueueingListener
from fluxgate_stream.pipeline import resolve_pipeline

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fluxgate.state import State

    from fluxgate_stream._apply import Pending
    from fluxgate_stream.pipeline import SignalPipeline

__all__ = ["SignalSink", "StreamingListener", "Transitions"]


@dataclass(frozen=True, slots=True)
class Transitions:
    """What happened to one circuit since its sink's last write.

    Attributes:
        name: the circuit's name (the listener's ``name``).
        closed: ``close()`` was called before the transitions below: drop your series first.
        state: the latest state, or ``None`` when there were no transitions.
        counts: how many transitions there were, per ``(old_state, new_state)``.
    """

    name: str
    closed: bool
    state: State | None
    counts: Mapping[tuple[State, State], int]


class SignalSink(Protocol):
    """Receives a circuit's coalesced transitions on the consumer (or, with no consumer, inline).

    ``write`` runs with the process-wide apply lock held: keep it short and never block. If it
    raises, the error is logged with the circuit's name and the consumer goes on.
    """

    def write(self, transitions: Transitions, /) -> None:
        """Apply ``transitions`` to your metrics."""
        ...


class _SinkTarget:
    """Adapts a ``SignalSink`` to the pipeline's ``Target``."""

    __slots__ = ("closed_seq", "name", "sink")

    fold = None  # no per-signal hook: a sink gets the coalesced transitions only

    def __init__(self, name: str, sink: SignalSink) -> None:
        self.name = name
        self.sink = sink
        self.closed_seq = -1

    def write(self, pending: Pending) -> None:
        """Hand the tally's record to the sink. Caller must hold APPLY_LOCK."""
        closed = pending.close_seq >= 0
        if closed:
            self.closed_seq = max(self.closed_seq, pending.close_seq)
        counts = types.MappingProxyType(dict(pending.counts))
        self.sink.write(Transitions(self.name, closed, pending.state, counts))


class StreamingListener(QueueingListener):
    """A fluxgate ``Listener`` whose metric updates run on the pipeline's consumer.

    While the consumer runs, each call only queues the signal, even a lone one (only a
    ``PrometheusListener``'s lone transitions are applied in the call: your code never runs on
    the breaker's path then); your ``sink`` gets the coalesced result on the consumer.

    Args:
        name: the circuit's name, passed on in every ``Transitions``. A non-empty ``str``.
        sink: any object with ``write(transitions)``.
        pipeline: the ``SignalPipeline`` to use; ``None`` uses ``default_pipeline()``.

    Raises:
        TypeError: ``name`` is not a ``str``, ``sink`` has no callable ``write``, or
            ``pipeline`` is not a ``SignalPipeline``.
        ValueError: ``name`` is empty.

    Example:
        fluxgate's documented custom metric, counting OPEN transitions, in streaming form:

        >>> from prometheus_client import CollectorRegistry, Counter
        >>> from fluxgate.signal import Signal
        >>> registry = CollectorRegistry()
        >>> OPEN_TRANSITIONS = Counter(
        ...     "circuit_breaker_open",
        ...     "Total number of times a circuit breaker has opened",
        ...     ["circuit_name"],
        ...     registry=registry,
        ... )
        >>> class OpenCounter:
        ...     def write(self, transitions: Transitions) -> None:
        ...         opened = sum(n for (_, new), n in transitions.counts.items() if new == "open")
        ...         if opened:
        ...             OPEN_TRANSITIONS.labels(transitions.name).inc(opened)
        >>> listener = StreamingListener("payment_api", OpenCounter())
        >>> listener(Signal(old_state="closed", new_state="open", timestamp=0.0))
        >>> registry.get_sample_value("circuit_breaker_open_total", {"circuit_name": "payment_api"})
        1.0
    """

    __slots__ = ()

    def __init__(
        self, name: str, sink: SignalSink, *, pipeline: SignalPipeline | None = None
    ) -> None:
        name = check_name(name)
        check_sink(sink)
        self._pipeline = resolve_pipeline(pipeline)
        self._target = _SinkTarget(name, sink)
