"""``PrometheusListener``: upstream's listener, its metric writes moved off the breaker's path."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from fluxgate.signal import Signal

from fluxgate_stream._apply import SEQUENCE
from fluxgate_stream._checks import (
    KNOWN_STATES,
    check_bool,
    check_name,
    check_registry,
    check_signal,
    check_state,
)
from fluxgate_stream._circuits import circuit_for, join
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

    __slots__ = ("__weakref__", "_state", "_target", "_to")

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

        What is queued is a plain ``Signal`` of fluxgate's own state strings and a plain float
        timestamp: a subclass, or states and timestamps of subclasses of ``str``, ``int`` or
        ``float``, are copied into plain ones first (``_checks.check_signal``).

        Raises:
            TypeError: ``signal`` is not a ``fluxgate.signal.Signal``, or its ``timestamp`` is
                not a number; nothing is queued.
            ValueError: its ``old_state`` or ``new_state`` is not a fluxgate state, or its
                ``timestamp`` is infinite, NaN or an int too large for a float; nothing is
                queued.
        """
        # Fast path first: exact types (type(), which no object can fake), two set lookups, and
        # a finite float (x - x is 0.0; for inf and nan it is nan, which is true). Anything else
        # goes through check_signal, which explains a failure or returns the plain Signal.
        if type(signal) is Signal:
            old, new, at = signal.old_state, signal.new_state, signal.timestamp
            fast = (
                type(old) is str
                and type(new) is str
                and type(at) is float
                and old in KNOWN_STATES
                and new in KNOWN_STATES
                and not at - at
            )
        else:
            fast = False
        if not fast:
            signal = check_signal(signal)
        target = self._target
        state = self._state
        # PipelineState.submit()'s common cases, inlined: on the breaker's hottest path a second
        # Python frame costs more than the branch itself. The reads the concurrency model relies
        # on (stated on PipelineState) are submit()'s: sleeping and loop_thread read again after
        # the bridge append; every other case goes through submit().
        loop_thread = state.loop_thread
        if loop_thread == _get_ident():
            if not state.overflowing:
                item: Item = (next(SEQUENCE), target, signal)
                if state.sleeping:
                    state.lone_on_loop(item)  # the first of a burst, or a lone signal
                elif state.receivers or len(state.buffer) >= state.max_buffer_size:
                    state.send_on_loop(item)  # hand it to the waiting consumer, or overflow
                else:
                    state.buffer_append(item)  # send_on_loop's common case
                return
        elif (
            loop_thread is not None
            and not state.sleeping
            and not state.overflowing
            and len(state.bridge) < state.max_buffer_size
        ):
            # Another thread, the consumer awake: not lone, so onto the bridge.
            state.bridge_append((next(SEQUENCE), target, signal))
            if state.sleeping or state.loop_thread is None:
                state.queued_off_loop()  # it went to sleep, or stopped, meanwhile
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
    pipeline's consumer runs, a call queues the signal and the consumer applies it (but for a
    lone transition, which the call applies: see ``SignalPipeline``'s ``lone``).

    Works with fluxgate's ``CircuitBreaker`` and ``AsyncCircuitBreaker`` alike, from any thread.
    Like upstream's, ``close()`` drops the name's series whoever wrote them.

    Args:
        name: the ``circuit_name`` label: a non-empty ``str`` of UTF-8 text, at most 256 bytes of
            it. A ``str`` subclass is exported as a plain ``str`` of its characters.
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
        TypeError: ``registry`` is neither ``None`` nor a ``CollectorRegistry``.
        ValueError: ``name`` is empty, not UTF-8 text, or longer than 256 bytes of UTF-8
            (``MAX_NAME_BYTES``); ``initial_state`` is not a fluxgate state; or ``registry``
            holds an unrelated collector under one of our metric names.
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
        name = check_name(name)
        registry = check_registry(registry)
        self._pipeline = resolve_pipeline(pipeline)
        if initial_state is not None:
            initial_state = check_state(initial_state, "initial_state")
        check_bool(time_in_state, "time_in_state")
        self._target = circuit_for(registry, name, initial_state, time_in_state=time_in_state)
        join(self._target, self)
