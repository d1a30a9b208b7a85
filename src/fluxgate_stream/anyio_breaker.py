"""``AnyioCircuitBreaker``: fluxgate's async circuit breaker on anyio, for asyncio and trio alike.

fluxgate's ``AsyncCircuitBreaker`` coordinates with ``asyncio.Lock``, ``asyncio.Semaphore`` and
``asyncio.gather``, so it fails under trio. ``AnyioCircuitBreaker`` has the same constructor, the
same public surface and the same state machine, and uses nothing but anyio.

Relationship to upstream
------------------------
Written against fluxgate 0.9.4; the package pins ``fluxgate>=0.9.4,<0.10``.
``tests/breakers/test_upstream_suite.py`` runs fluxgate's own ``AsyncCircuitBreaker`` tests
against this class, on both backends, for whichever fluxgate version is installed.

* Reused as they are: every component (windows, trackers, trippers, retries, permits), ``Record``,
  ``CallContext``, ``Signal``, ``State``, ``CallNotPermittedError``, ``CircuitBreakerInfo`` (what
  ``info()`` returns) and the module-level helpers ``_collect_slow_thresholds`` and
  ``_classify_slow`` (through ``fluxgate_stream._compat``, where every use of a dependency's
  private API is), so slow calls are classified exactly as upstream does it.
* Written again, on the same plan: the six state handlers, the transition bookkeeping (``reopens``,
  the failure streak, the window reset, the signal) and the listener notification. The error
  messages are upstream's, word for word.
* Not a subclass. Upstream's handlers reach into private attributes typed as asyncio primitives
  (``_lock``, ``_half_open_semaphore``) and call ``_notify``. A subclass would have to swap those
  and rely on that private protocol staying the same in every 0.9.x release.

Deliberate differences, all documented on the class: no lock is needed (see "Concurrency model");
a stale outcome is recognised by a transition counter, which also closes the
``closed -> ... -> closed`` hole that upstream documents; listeners are notified one after
another instead of through ``asyncio.gather``; a probe's half-open slot is released before its
listeners run; ``max_half_open_calls`` below 1 is rejected instead of blocking forever.

Time
----
Like fluxgate, the breaker reads the wall clock with ``time.time()`` (``changed_at`` and signal
timestamps) and measures calls with ``time.perf_counter()``. Both are looked up on the ``time``
module at every call. They are not constructor parameters: fluxgate's ``Cooldown``, ``Backoff``
and ``RampUp`` compare ``changed_at`` against their own ``time.time()`` reading, so a clock given to
the breaker alone would disagree with them. A test controls time by patching ``time.time`` (and
``fluxgate.permits.time``, which ``RampUp`` imported by name) and ``time.perf_counter``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, ClassVar, ParamSpec, TypeVar, cast, overload

import anyio
from fluxgate.circuitbreaker import CircuitBreakerInfo
from fluxgate.errors import CallNotPermittedError
from fluxgate.metric import Record
from fluxgate.permits import RampUp
from fluxgate.retries import Cooldown
from fluxgate.signal import Signal
from fluxgate.trackers import All
from fluxgate.trippers import CallContext, FailureRate, MinRequests
from fluxgate.windows import CountWindow

from fluxgate_stream._checks import check_count
from fluxgate_stream._compat import classify_slow, collect_slow_thresholds

if TYPE_CHECKING:
    from fluxgate.listeners import AsyncListener, Listener
    from fluxgate.permits import Permit
    from fluxgate.retries import Retry
    from fluxgate.state import State
    from fluxgate.trackers import Tracker
    from fluxgate.trippers import Tripper
    from fluxgate.windows import Window

__all__ = ["AnyioCircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")

_logger = logging.getLogger(__name__)

#: What a finished call left to record: ``(result, duration)``, or the tracked exception it raised.
_Outcome = tuple[R, float] | Exception


async def _measure(
    tracker: Tracker, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
) -> _Outcome[R]:
    """Await ``func(*args, **kwargs)`` and return its outcome.

    Raises:
        BaseException: whatever ``func`` raised, unchanged, when ``tracker`` does not count it as
            a failure (and every ``BaseException`` that is not an ``Exception``, such as a
            cancellation, which is never counted).
    """
    start = time.perf_counter()
    try:
        result = await func(*args, **kwargs)
    except Exception as exc:
        if not tracker(exc):
            raise
        return exc
    return result, time.perf_counter() - start


def _listener_name(listener: object) -> str:
    return getattr(listener, "__qualname__", type(listener).__qualname__)


class AnyioCircuitBreaker:
    """fluxgate's ``AsyncCircuitBreaker``, built on anyio: the same breaker on asyncio and trio.

    The circuit breaker operates in three main states:

    - CLOSED: normal operation, calls pass through and are recorded
    - OPEN: the tripper fired, calls are rejected until ``retry`` allows a probe
    - HALF_OPEN: probes (admitted by ``permit``, at most ``max_half_open_calls`` at once) decide
      between CLOSED and OPEN

    and three manual ones: METRICS_ONLY (record, never trip), DISABLED (pass through, record
    nothing) and FORCED_OPEN (reject everything).

    Args:
        window: Sliding window for metrics collection (default: ``CountWindow(100)``).
        tracker: Decides which exceptions count as failures (default: ``All()``).
        tripper: Condition to open/close the circuit based on metrics
            (default: ``MinRequests(100) & FailureRate(0.5)``).
        retry: Strategy for moving from OPEN to HALF_OPEN (default: ``Cooldown(60.0)``).
        permit: Strategy for admitting calls in HALF_OPEN (default: ``RampUp(0.1, 1.0, 60.0)``).
        max_half_open_calls: Most HALF_OPEN probes in flight at once; further callers wait for
            a slot (default: 10).
        listeners: Sync or async callables notified of every transition (default: none).

    Raises:
        TypeError: ``max_half_open_calls`` is not an ``int`` (a ``bool`` is not one).
        ValueError: ``max_half_open_calls`` is less than 1 (upstream would block every probe),
            or more than ``sys.maxsize``.

    Examples:
        >>> import anyio
        >>> from fluxgate.trippers import FailureStreak
        >>> cb = AnyioCircuitBreaker(tripper=FailureStreak(3))
        >>> @cb
        ... async def fetch(x: int) -> int:
        ...     return x * 2
        >>> anyio.run(fetch, 21, backend="trio")
        42
        >>> cb.info().state
        'closed'

    Concurrency model:
        A breaker belongs to one event loop; it is not thread-safe (neither is upstream's). From
        another thread, go through ``anyio.from_thread.run``.

        *No lock.* Every read-modify-write of breaker state (recording an outcome, asking the
        tripper, a transition, the retry check and the transition to HALF_OPEN, the manual
        commands) runs in plain synchronous code with no ``await`` in it. A synchronous stretch
        cannot be suspended, so it is atomic with respect to every other task on the loop. That
        is the same guarantee upstream gets from its ``asyncio.Lock``, which is never held
        across an ``await`` and therefore never contended. An ``anyio.Lock`` would exclude
        nothing, but would cost time on every call and add a cancellation point between a
        finished call and the recording of its outcome.

        *Outside any critical section:* the protected callable, the fallback and the listeners.
        ``info()`` is synchronous and always answers at once.

        *HALF_OPEN probes* are capped with ``anyio.Semaphore(max_half_open_calls)`` (a semaphore,
        not a ``CapacityLimiter``, so one task may nest probes). A probe holds its slot only while
        the permit check, the call and the recording run, and releases it before its listeners
        run. A caller that finds no free slot waits for one. If the state changed meanwhile, it
        is dispatched to the current state without keeping the slot.

        *Stale outcomes.* Every transition increments a counter. A call notes the counter when
        it starts and records its outcome only if no transition happened since. A late outcome
        is therefore never recorded into the next state's freshly reset window, and cannot
        close or re-open the circuit. The call's own result or exception still reaches its
        caller. Upstream compares handler objects instead, and documents that a round trip back
        to the same state (``closed -> open -> half_open -> closed``, or ``reset()`` while
        closed) lets one stale sample in; the counter closes that hole.

        *Listeners* are called after the transition is applied, outside any critical section,
        in registration order, one after another. A sync listener is called; a listener whose
        result is awaitable (an async listener) is awaited before the next one is called. With
        only sync listeners a transition is announced before any other task runs, so they see
        transitions in order. The call that caused the transition returns (or raises) after its
        listeners have finished. A listener that raises an ``Exception`` is logged on this
        module's logger (``fluxgate_stream.anyio_breaker``) and skipped. A cancellation
        propagates to the caller, and the remaining listeners miss that signal (upstream's
        ``gather`` loses it the same way). Slow async listeners add up, so a listener doing I/O
        should hand its work off, as ``fluxgate_stream.PrometheusListener`` does.

        *Cancellation* of a protected call, or of a caller waiting for a HALF_OPEN slot, is
        never recorded as a failure.
    """

    def __init__(  # noqa: PLR0913, PLR0917 - AsyncCircuitBreaker's signature, kept for drop-in use
        self,
        window: Window | None = None,
        tracker: Tracker | None = None,
        tripper: Tripper | None = None,
        retry: Retry | None = None,
        permit: Permit | None = None,
        max_half_open_calls: int = 10,
        listeners: Iterable[Listener | AsyncListener] = (),
    ) -> None:
        max_half_open_calls = cast("int", check_count(max_half_open_calls, "max_half_open_calls"))
        self._window: Window = CountWindow(100) if window is None else window
        self._tracker: Tracker = All() if tracker is None else tracker
        self._tripper: Tripper = MinRequests(100) & FailureRate(0.5) if tripper is None else tripper
        self._retry: Retry = Cooldown(60.0) if retry is None else retry
        self._permit: Permit = RampUp(0.1, 1.0, 60.0) if permit is None else permit
        self._listeners: tuple[Listener | AsyncListener, ...] = tuple(listeners)
        self._slow_thresholds: tuple[float, ...] = collect_slow_thresholds(self._tripper)
        self._changed_at = time.time()
        self._reopens = 0
        self._consecutive_failures = 0
        self._generation = 0
        self._half_open_slots = anyio.Semaphore(max_half_open_calls, fast_acquire=True)
        self._handlers: dict[State, AnyioCircuitBreaker._Handler] = {
            "closed": self._Closed(self),
            "open": self._Open(self),
            "half_open": self._HalfOpen(self),
            "metrics_only": self._MetricsOnly(self),
            "disabled": self._Disabled(self),
            "forced_open": self._ForcedOpen(self),
        }
        self._state: AnyioCircuitBreaker._Handler = self._handlers["closed"]

    class _Handler(ABC):
        """One state's call path. ``execute`` is only entered through ``cb._state.execute``."""

        # "__dict__": fluxgate_stream.calls meters a breaker by giving its handlers their own
        # execute (an instance attribute), as it does for fluxgate's breakers.
        __slots__ = ("__dict__", "cb")
        state: ClassVar[State]

        def __init__(self, cb: AnyioCircuitBreaker) -> None:
            self.cb = cb

        @abstractmethod
        async def execute(
            self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
        ) -> R:
            """Run ``func`` as this state dictates."""

    class _Closed(_Handler):
        __slots__ = ()
        state: ClassVar[State] = "closed"

        async def execute(
            self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
        ) -> R:
            cb = self.cb
            generation = cb._generation
            outcome = await _measure(cb._tracker, func, *args, **kwargs)
            signal = self.settle(generation, outcome)
            if signal is not None:
                await cb._notify(signal)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome[0]

        def settle(self, generation: int, outcome: _Outcome[object]) -> Signal | None:
            cb = self.cb
            if cb._record(generation, outcome) and cb._trips("closed"):
                return cb._transition_to("open")
            return None

    class _Open(_Handler):
        __slots__ = ()
        state: ClassVar[State] = "open"

        async def execute(
            self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
        ) -> R:
            cb = self.cb
            # Entered synchronously from cb._state.execute, so this is still the current state.
            if not cb._retry(cb._changed_at, cb._reopens):
                raise CallNotPermittedError("Circuit breaker is open")
            await cb._notify(cb._transition_to("half_open"))
            return await cb._state.execute(func, *args, **kwargs)

    class _HalfOpen(_Handler):
        __slots__ = ()
        state: ClassVar[State] = "half_open"

        async def execute(
            self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
        ) -> R:
            cb = self.cb
            outcome: _Outcome[R] | None = None
            signal: Signal | None = None
            async with cb._half_open_slots:
                if cb._state is self:
                    if not cb._permit(cb._changed_at):
                        raise CallNotPermittedError("Circuit breaker is half-open, not executing")
                    generation = cb._generation
                    outcome = await _measure(cb._tracker, func, *args, **kwargs)
                    signal = self.settle(generation, outcome)
            if outcome is None:
                # The state changed while this call waited for a slot: dispatch without one.
                return await cb._state.execute(func, *args, **kwargs)
            if signal is not None:
                await cb._notify(signal)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome[0]

        def settle(self, generation: int, outcome: _Outcome[object]) -> Signal | None:
            cb = self.cb
            if not cb._record(generation, outcome):
                return None
            tripped = cb._trips("half_open")
            if isinstance(outcome, Exception):
                return cb._transition_to("open") if tripped else None
            return None if tripped else cb._transition_to("closed")

    class _MetricsOnly(_Handler):
        __slots__ = ()
        state: ClassVar[State] = "metrics_only"

        async def execute(
            self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
        ) -> R:
            cb = self.cb
            generation = cb._generation
            outcome = await _measure(cb._tracker, func, *args, **kwargs)
            cb._record(generation, outcome)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome[0]

    class _Disabled(_Handler):
        __slots__ = ()
        state: ClassVar[State] = "disabled"

        async def execute(
            self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
        ) -> R:
            return await func(*args, **kwargs)

    class _ForcedOpen(_Handler):
        __slots__ = ()
        state: ClassVar[State] = "forced_open"

        async def execute(
            self,
            func: Callable[P, Awaitable[R]],  # noqa: ARG002 - every state's execute takes these
            /,
            *args: P.args,  # noqa: ARG002 - every state's execute takes these
            **kwargs: P.kwargs,  # noqa: ARG002 - every state's execute takes these
        ) -> R:
            raise CallNotPermittedError("Circuit breaker is forced open")

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...

    @overload
    def __call__(
        self,
        func: None = None,
        *,
        fallback: Callable[[Exception], R] | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]: ...

    def __call__(
        self,
        func: Callable[P, Awaitable[R]] | None = None,
        *,
        fallback: Callable[[Exception], R] | None = None,
    ) -> (
        Callable[P, Awaitable[R]] | Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]
    ):
        """Decorate an async function with circuit breaker protection.

        Use it bare (``@cb``) or with a fallback (``@cb(fallback=...)``).

        Args:
            func: The async function to protect; ``None`` when called with ``fallback=``.
            fallback: Called with any ``Exception`` the protected call raised, including
                ``CallNotPermittedError``; its return value becomes the call's result. It may
                re-raise.

        Returns:
            The wrapped async function, or a decorator that wraps one.

        Raises:
            CallNotPermittedError: Raised by the wrapped function, without a fallback, when the
                circuit is OPEN and ``retry`` declines, HALF_OPEN and ``permit`` declines, or
                FORCED_OPEN.
            Exception: Raised by the wrapped function, without a fallback: whatever the
                protected function raised, unchanged. With a fallback: whatever the fallback
                raised.
        """

        def decorator(f: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            @functools.wraps(f)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                try:
                    return await self._state.execute(f, *args, **kwargs)
                except Exception as exc:
                    if fallback is not None:
                        return fallback(exc)
                    raise

            return wrapper

        if func is not None:
            return decorator(func)
        return decorator

    async def call(
        self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``func(*args, **kwargs)`` under circuit breaker protection.

        Args:
            func: The async function to call.
            *args: Positional arguments for ``func``.
            **kwargs: Keyword arguments for ``func``.

        Returns:
            What ``func`` returned.

        Raises:
            CallNotPermittedError: The circuit is OPEN and ``retry`` declines ("Circuit breaker
                is open"), HALF_OPEN and ``permit`` declines ("Circuit breaker is half-open, not
                executing"), or FORCED_OPEN ("Circuit breaker is forced open"). ``func`` is not
                called.
            Exception: Whatever ``func`` raised, unchanged, whether or not ``tracker`` counted
                it as a failure.
        """
        return await self._state.execute(func, *args, **kwargs)

    async def call_with_fallback(
        self,
        func: Callable[P, Awaitable[R]],
        fallback: Callable[[Exception], R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Like ``call``, but hand any ``Exception`` to ``fallback`` and return its result.

        Args:
            func: The async function to call.
            fallback: Called with the exception (including ``CallNotPermittedError``); may
                re-raise.
            *args: Positional arguments for ``func``.
            **kwargs: Keyword arguments for ``func``.

        Returns:
            What ``func`` returned, or what ``fallback`` returned.

        Raises:
            Exception: Whatever ``fallback`` raised.
        """
        try:
            return await self._state.execute(func, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the contract: every Exception goes to fallback
            return fallback(exc)

    def info(self) -> CircuitBreakerInfo:
        """Return the current state, when it last changed, the reopen count and the metrics."""
        return CircuitBreakerInfo(
            state=self._state.state,
            changed_at=self._changed_at,
            reopens=self._reopens,
            metrics=self._window.get_metric(),
        )

    async def reset(self) -> None:
        """Move to CLOSED and clear the metrics, the reopen count and the failure streak."""
        await self._notify(self._transition_to("closed"))

    async def disable(self) -> None:
        """Move to DISABLED: every call passes through and nothing is recorded."""
        await self._notify(self._transition_to("disabled"))

    async def metrics_only(self) -> None:
        """Move to METRICS_ONLY: calls are recorded but the circuit never opens."""
        await self._notify(self._transition_to("metrics_only"))

    async def force_open(self) -> None:
        """Move to FORCED_OPEN: every call is rejected until another command."""
        await self._notify(self._transition_to("forced_open"))

    # Critical sections: synchronous, so atomic on the event loop (see "Concurrency model").

    def _record(self, generation: int, outcome: _Outcome[object]) -> bool:
        """Record ``outcome`` unless a transition happened since ``generation``; say if it did."""
        if generation != self._generation:
            return False
        if isinstance(outcome, Exception):
            self._consecutive_failures += 1
            self._window.record(Record(success=False))
        else:
            duration = outcome[1]
            self._window.record(
                Record(
                    success=True,
                    duration=duration,
                    slow_at=classify_slow(duration, self._slow_thresholds),
                )
            )
            self._consecutive_failures = 0
        return True

    def _trips(self, state: State) -> bool:
        return self._tripper(
            CallContext(
                metric=self._window.get_metric(),
                state=state,
                consecutive_failures=self._consecutive_failures,
            )
        )

    def _transition_to(self, state: State) -> Signal:
        """Apply a transition; the caller notifies the returned signal with no state held."""
        current = self._state.state
        if state == "open" and current == "half_open":
            self._reopens += 1
        elif state == "half_open":
            self._consecutive_failures = 0
        elif state == "closed":
            self._reopens = 0
            self._consecutive_failures = 0
        self._state = self._handlers[state]
        self._changed_at = time.time()
        self._generation += 1
        self._window.reset()
        return Signal(old_state=current, new_state=state, timestamp=self._changed_at)

    async def _notify(self, signal: Signal) -> None:
        for listener in self._listeners:
            try:
                result = listener(signal)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: PERF203 - a try per listener is what isolates each one
                _logger.exception(
                    "Listener %s failed on %s -> %s",
                    _listener_name(listener),
                    signal.old_state,
                    signal.new_state,
                )
