"""``ThreadSafeCircuitBreaker``: fluxgate's sync ``CircuitBreaker``, safe to share between threads.

fluxgate's ``CircuitBreaker`` says of itself that it is not thread-safe, and it is not: two
request threads whose calls end together can both see the tripper fire and both transition (two
trips counted for one, or an ``open -> open`` signal); a call that started in one state records
its outcome in the next state's window; two transitions on two threads can reach the listeners
in the other order than they happened, so the gauge shows a state the breaker is not in.
``tests/breakers/test_threadsafe_breaker.py`` shows each of these on upstream's class,
deterministically (the threads meet at barriers, not by luck).

A WSGI server runs each request in a thread of its own (Flask's threaded server makes one per
request), so "one breaker per thread" is not a breaker at all: share one breaker per circuit
between every thread. This class is fluxgate's own ``CircuitBreaker``, wrapped:

Concurrency model
-----------------
* One lock per breaker is held for everything the breaker does *except the protected call*:
  choosing the handler, the retry and permit checks, recording the outcome, the tripper, the
  transition and its listener calls. The protected call runs with the lock released, so request
  threads still call the remote service concurrently.
* Listeners are called with the lock held, in the order the transitions happen: the signals
  reach a ``PrometheusListener`` in that order, so its gauge ends at the breaker's real state.
  A ``PrometheusListener`` call never blocks (with a consumer running, it appends to the thread
  bridge; without, it applies under the process-wide apply lock, which it never waits on while
  holding anything of ours). Listeners must not block, and must not call this breaker. Locks
  are taken in one order: this lock, then (no consumer running) the apply lock; nothing of ours
  calls a breaker with the apply lock held (``watch()`` reads ``info()`` outside every lock),
  and a ``SignalSink`` of yours, which runs under the apply lock, must not either.
* A call's outcome counts only if no transition happened while it ran (as in
  ``AnyioCircuitBreaker``): the transition reset the window, and an outcome of the previous state
  must not land in the next state's window nor trip the breaker a second time. The caller still
  gets its result, or its exception.
* The lock is a re-entrant one, so a protected call may itself go through the same breaker. A
  call's measured duration (slow-call detection) includes waiting for the lock after the call,
  which is as long as another thread's bookkeeping: microseconds.
* ``os.fork()``: the forking thread takes every breaker's lock just before the fork (this
  module's ``before`` hook runs before ``_apply``'s, so in the lock order above) and releases them
  just after, in the parent and in the child. The fork therefore waits for transitions under way
  on other threads (microseconds: listeners do not block), and the child never inherits a lock
  held by a thread it does not have, nor a transition half done.

Everything else is upstream's: the constructor, the components, the states and the messages.
``tests/breakers/test_upstream_suite.py`` runs fluxgate's own ``CircuitBreaker`` tests against
this class.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar, cast, overload

from fluxgate import CircuitBreaker

from fluxgate_stream._compat import at_fork, kept

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from fluxgate.circuitbreaker import CircuitBreakerInfo
    from fluxgate.listeners import Listener
    from fluxgate.permits import Permit
    from fluxgate.retries import Retry
    from fluxgate.signal import Signal
    from fluxgate.trackers import Tracker
    from fluxgate.trippers import Tripper
    from fluxgate.windows import Window

__all__ = ["ThreadSafeCircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")


class _Stale(BaseException):  # not an error: a control-flow signal, never escapes
    """Carries a call's outcome past fluxgate's bookkeeping, which ``except Exception`` misses.

    Raised by the protected call's wrapper when a transition happened while the call ran.
    """

    def __init__(self, outcome: object, error: BaseException | None) -> None:
        super().__init__()
        self.outcome = outcome
        self.error = error


class ThreadSafeCircuitBreaker:
    """fluxgate's ``CircuitBreaker``, with a lock: one breaker per circuit, shared by threads.

    The same constructor, methods and decorator as ``fluxgate.CircuitBreaker`` (it builds one
    and drives it); see the module docstring for the concurrency model. Use it wherever
    several threads call one breaker: WSGI request threads, thread pools.

    Args:
        window: as ``fluxgate.CircuitBreaker``: the sliding window (default ``CountWindow(100)``).
        tracker: which exceptions count as failures (default: all).
        tripper: when to open, and close from half-open
            (default ``MinRequests(100) & FailureRate(0.5)``).
        retry: when to go from open to half-open (default ``Cooldown(60.0)``).
        permit: which calls half-open lets through (default ``RampUp(0.1, 1.0, 60.0)``).
        listeners: called with each transition's ``Signal``, in order, under the lock.

    Example:
        >>> import threading
        >>> from prometheus_client import CollectorRegistry
        >>> from fluxgate.trippers import MinRequests, FailureRate
        >>> from fluxgate_stream import PrometheusListener
        >>> registry = CollectorRegistry()
        >>> cb = ThreadSafeCircuitBreaker(
        ...     tripper=MinRequests(4) & FailureRate(0.5),
        ...     listeners=[PrometheusListener("api", registry)],
        ... )
        >>> def fail() -> None:
        ...     raise ConnectionError("down")
        >>> def request() -> None:
        ...     try:
        ...         cb.call(fail)
        ...     except Exception:
        ...         pass
        >>> threads = [threading.Thread(target=request) for _ in range(8)]
        >>> for thread in threads:
        ...     thread.start()
        >>> for thread in threads:
        ...     thread.join()
        >>> cb.info().state
        'open'
        >>> registry.get_sample_value(
        ...     "circuit_breaker_state_transition_total",
        ...     {"circuit_name": "api", "old_state": "closed", "new_state": "open"},
        ... )
        1.0
    """

    def __init__(  # noqa: PLR0913, PLR0917  # fluxgate.CircuitBreaker's signature, kept for drop-in use
        self,
        window: Window | None = None,
        tracker: Tracker | None = None,
        tripper: Tripper | None = None,
        retry: Retry | None = None,
        permit: Permit | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self._lock: Final = threading.RLock()
        _BREAKERS.add(self)  # for the fork hooks
        # Transitions so far, counted by the first listener (under the lock): a call that sees
        # the count move while it ran has a stale outcome.
        self._transitions = 0
        self._breaker: Final = CircuitBreaker(
            window=window,
            tracker=tracker,
            tripper=tripper,
            retry=retry,
            permit=permit,
            listeners=(self._count, *listeners),
        )

    def __repr__(self) -> str:
        return f"<ThreadSafeCircuitBreaker state={self._breaker.info().state!r}>"

    def _count(self, _signal: Signal) -> None:
        self._transitions += 1

    # -- calls -----------------------------------------------------------------------------------

    def call(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``func(*args, **kwargs)`` through the breaker, as ``CircuitBreaker.call``.

        Raises:
            fluxgate.errors.CallNotPermittedError: the circuit is open, forced open, or half-open
                and the permit refuses the call.
            Exception: whatever ``func`` raised.
        """
        lock = self._lock

        def unlocked(*a: P.args, **k: P.kwargs) -> R:
            started = self._transitions
            lock.release()
            try:
                result = func(*a, **k)
            except BaseException as error:
                lock.acquire()
                if self._transitions != started:
                    raise _Stale(None, error) from None
                raise
            lock.acquire()
            if self._transitions != started:
                raise _Stale(result, None)
            return result

        try:
            with lock:
                return self._breaker.call(unlocked, *args, **kwargs)
        except _Stale as stale:  # the outcome of a state the breaker has left: not recorded
            if stale.error is not None:
                raise stale.error from None
            return cast("R", stale.outcome)  # what func returned

    def call_with_fallback(
        self,
        func: Callable[P, R],
        fallback: Callable[[Exception], R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """``call()``, but an ``Exception`` (a refused call too) goes to ``fallback(error)``."""
        try:
            return self.call(func, *args, **kwargs)
        except Exception as error:  # noqa: BLE001  # upstream's contract: every Exception
            return fallback(error)

    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]: ...

    @overload
    def __call__(
        self, func: None = None, *, fallback: Callable[[Exception], R] | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def __call__(
        self,
        func: Callable[P, R] | None = None,
        *,
        fallback: Callable[[Exception], R] | None = None,
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function: ``@breaker`` or ``@breaker(fallback=...)``, as upstream's."""

        def decorator(f: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(f)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                if fallback is None:
                    return self.call(f, *args, **kwargs)
                return self.call_with_fallback(f, fallback, *args, **kwargs)

            return wrapper

        if func is not None:
            return decorator(func)
        return decorator

    # -- state -----------------------------------------------------------------------------------

    def info(self) -> CircuitBreakerInfo:
        """The state, when it last changed, the reopen count and the window's metric, together."""
        with self._lock:
            return self._breaker.info()

    def reset(self) -> None:
        """Go to closed and clear the window (``CircuitBreaker.reset``)."""
        with self._lock:
            self._breaker.reset()

    def disable(self) -> None:
        """Go to disabled: calls pass through untracked (``CircuitBreaker.disable``)."""
        with self._lock:
            self._breaker.disable()

    def metrics_only(self) -> None:
        """Go to metrics-only: tracked, never opens (``CircuitBreaker.metrics_only``)."""
        with self._lock:
            self._breaker.metrics_only()

    def force_open(self) -> None:
        """Go to forced-open: every call is refused (``CircuitBreaker.force_open``)."""
        with self._lock:
            self._breaker.force_open()


#: Every ThreadSafeCircuitBreaker alive, for the fork hooks (weakly held; kept across reload).
_BREAKERS: weakref.WeakSet[ThreadSafeCircuitBreaker] = kept(
    "threadsafe_breaker.breakers", weakref.WeakSet[ThreadSafeCircuitBreaker]
)
#: The locks ``_before_fork`` took, by forking thread, for its after-hooks to release: two
#: threads may fork at once (each waits for the other's locks in turn, never releases them).
_HELD: dict[int, list[threading.RLock]] = kept(
    "threadsafe_breaker.held", dict[int, list[threading.RLock]]
)


def _before_fork() -> None:
    held = _HELD.setdefault(threading.get_ident(), [])
    for breaker in sorted(_BREAKERS, key=id):  # one order for every forking thread
        lock = breaker._lock  # pyright: ignore[reportPrivateUsage]  # this module's own
        lock.acquire()
        held.append(lock)


def _after_fork_in_parent() -> None:
    held = _HELD.pop(threading.get_ident(), [])
    while held:
        held.pop().release()


def _after_fork_in_child() -> None:  # pragma: no cover  # runs in forked children (their tests)
    _after_fork_in_parent()  # the forking thread, the one the child has, holds them there too
    _HELD.clear()  # other threads' forks under way: those threads are not in the child


# Registered once (a reload finds it kept), after _apply's: its before-hook runs first.
at_fork(
    "threadsafe_breaker.locks",
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
