"""``PrometheusListener``: upstream's listener, its metric writes moved off the breaker's path."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from anyio import WouldBlock
from fluxgate.signal import Signal

from fluxgate_stream._apply import SEQUENCE
from fluxgate_stream._checks import (
    KNOWN_STATES,
    check_bool,
    check_name,
    check_signal,
    check_state,
    check_timestamp,
)
from fluxgate_stream._circuits import circuit_for
from fluxgate_stream._queue import PipelineState
from fluxgate_stream.pipeline import SignalPipeline, resolve_pipeline

if TYPE_CHECKING:
    from fluxgate.state import State
    from prometheus_client import CollectorRegistry

    from fluxgate_stream._apply import Item, Target

# check_name and resolve_pipeline, once defined here, are still importable from this module.
__all__ = ["PrometheusListener", "QueueingListener"]

_get_ident = threading.get_ident


class QueueingListener:
    """Base of listeners whose writes run on a pipeline's consumer instead of the caller's path.

    Subclasses set ``_target`` (what the consumer writes to) and ``_pipeline``; this class gives
    them the fluxgate ``Listener`` call and ``close()``.
    """

    __slots__ = ("_state", "_target", "_to")

    _state: PipelineState  # the pipeline's, shared with its consumer (see fluxgate_stream._queue)
    _target: Target
    _to: SignalPipeline

    @property
    def _pipeline(self) -> SignalPipeline:
        return self._to

    @_pipeline.setter
    def _pipeline(self, pipeline: SignalPipeline) -> None:
        # Setting the pipeline, as subclasses do, also looks up the state its listeners share.
        self._to = pipeline
        self._state = PipelineState.of(pipeline)

    @property
    def name(self) -> str:
        """The ``circuit_name`` this listener writes."""
        return self._target.name

    @property
    def pipeline(self) -> SignalPipeline:
        """The pipeline that carries this listener's signals."""
        return self._pipeline

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, pipeline={self._pipeline!r})"

    def __call__(self, signal: Signal, /) -> None:
        """Record a transition: queued while the consumer runs, applied directly otherwise.

        Raises:
            TypeError: ``signal`` is not a ``fluxgate.signal.Signal``; nothing is queued.
            ValueError: its ``old_state`` or ``new_state`` is not a fluxgate state; nothing is
                queued.
            TypeError, ValueError: the circuit counts time in state and ``signal.timestamp`` is
                not a finite number; nothing is queued.
        """
        # Fast path first (one class check, two set lookups); check_signal explains failures.
        try:
            fast = (
                signal.__class__ is Signal
                and signal.old_state in KNOWN_STATES
                and signal.new_state in KNOWN_STATES
            )
        except TypeError:  # an unhashable state: let check_signal say what is wrong
            fast = False
        if not fast:
            check_signal(signal)
        target = self._target
        if target.fold is not None:  # the target reads timestamps (time in state)
            timestamp = signal.timestamp
            # A finite float passes (x - x is 0.0; for inf and nan it is nan, which is true).
            if timestamp.__class__ is not float or timestamp - timestamp:
                check_timestamp(signal)
        state = self._state
        # PipelineState.submit()'s loop-thread branch, inlined: on the breaker's hottest path a
        # second Python frame costs more than the branch itself. Same reads in the same order,
        # so the pipeline's concurrency model holds as written there; every other case goes
        # through submit().
        if state.loop_thread == _get_ident() and not state.overflowing:
            item: Item = (next(SEQUENCE), target, signal)
            try:
                state.send_nowait(item)
            except WouldBlock:
                state.overflow(item)
            return
        state.submit(target, signal)

    def close(self) -> None:
        """Drop every series of this listener's ``circuit_name``. Idempotent.

        Ordered after this listener's signals already queued; the series return on the next
        transition.
        """
        self._state.submit(self._target, None)


class PrometheusListener(QueueingListener):
    """A fluxgate ``Listener`` that exports circuit-breaker state to Prometheus through a pipeline.

    A drop-in for ``fluxgate.listeners.prometheus.PrometheusListener``: the same metrics
    (``circuit_breaker_state{circuit_name,state}`` and
    ``circuit_breaker_state_transition_total{circuit_name,old_state,new_state}``), the same
    ``registry=`` and ``close()``. The difference is where the writes happen: while the
    pipeline's consumer runs, a call only queues the signal; the consumer applies it.

    Works with fluxgate's ``CircuitBreaker`` and ``AsyncCircuitBreaker`` alike, from any thread.
    Like upstream's, ``close()`` drops the name's series whoever wrote them.

    Args:
        name: the ``circuit_name`` label. A non-empty ``str``.
        registry: where the metrics live. ``None`` (the default) shares upstream's module-level
            metrics on ``prometheus_client.REGISTRY``; any number of listeners may share one
            custom ``CollectorRegistry``.
        pipeline: the ``SignalPipeline`` that carries this listener's signals; ``None`` uses
            ``default_pipeline()``.
        initial_state: the state a circuit without series shows from construction on, so that
            circuits which never tripped are counted by ``sum(circuit_breaker_state) by (state)``.
            With it, the counters of the four transitions a breaker makes on its own
            (closed -> open, open -> half_open, half_open -> open, half_open -> closed) exist at
            0 from construction on, so that ``rate()`` and ``increase()`` count the first of
            each. ``None`` turns both off (upstream's behaviour: no series before the first
            transition).
        time_in_state: also export ``circuit_breaker_state_seconds_total{circuit_name,state}``,
            the seconds the circuit has spent in each state, from the signals' timestamps, the
            current state counted up to each scrape (see ``fluxgate_stream.time_in_state``).
            Off by default, so that the drop-in exports only upstream's two metrics. Once on for
            a (registry, name), it stays on for every listener of that circuit.

    Raises:
        TypeError: ``name`` is not a ``str``, ``pipeline`` is not a ``SignalPipeline``, or
            ``time_in_state`` is not a ``bool``.
        ValueError: ``name`` is empty, ``initial_state`` is not a fluxgate state, or
            ``registry`` holds an unrelated collector under one of our metric names.
        RuntimeError: ``time_in_state`` is true in prometheus_client's multiprocess mode.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from fluxgate.signal import Signal
        >>> registry = CollectorRegistry()
        >>> listener = PrometheusListener("payment_api", registry)
        >>> registry.get_sample_value(
        ...     "circuit_breaker_state", {"circuit_name": "payment_api", "state": "closed"}
        ... )
        1.0
        >>> listener(Signal(old_state="closed", new_state="open", timestamp=0.0))
        >>> registry.get_sample_value(
        ...     "circuit_breaker_state", {"circuit_name": "payment_api", "state": "open"}
        ... )
        1.0
    """

    __slots__ = ()

    def __init__(
        self,
        name: str,
        registry: CollectorRegistry | None = None,
        *,
        pipeline: SignalPipeline | None = None,
        initial_state: State | None = "closed",
        time_in_state: bool = False,
    ) -> None:
        check_name(name)
        self._pipeline = resolve_pipeline(pipeline)
        if initial_state is not None:
            check_state(initial_state, "initial_state")
        check_bool(time_in_state, "time_in_state")
        self._target = circuit_for(registry, name, initial_state, time_in_state=time_in_state)
