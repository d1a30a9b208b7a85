"""Every use of a dependency's private API, and how module state survives ``importlib.reload``.

Nothing else in the package reads a dependency's private names: when a new release of one of
them breaks something here, this file is where it shows. Each use names the versions it was
checked against: the lowest that ``pyproject.toml`` allows and the latest tested
(``make test-lowest`` runs the suite against the lowest).

=====================================  =========================================================
use                                    checked against
=====================================  =========================================================
``_names_to_collectors`` (a registry)  prometheus-client 0.22.0 and 0.26.0
``MetricWrapperBase._labelnames``      prometheus-client 0.22.0 and 0.26.0
``values.ValueClass._multiprocess``    prometheus-client 0.22.0 and 0.26.0 (absent: not
                                       multiprocess)
``MetricWrapperBase._lock``,           prometheus-client 0.22.0 and 0.26.0 (``threading.Lock``s:
``._metrics``, a child's               the metric's, taken by ``labels()``, ``remove()`` and a
``_value._lock``                       collect's copy; the value's, by ``set``/``inc``/``get``;
                                       single-process values only)
a child's ``_value`` (its ``set``,     prometheus-client 0.22.0 and 0.26.0 (what ``Gauge.set``
``inc``)                               and ``Counter.inc`` call after their checks, for values
                                       that pass them: a float, an increment above 0; file-backed
                                       in multiprocess mode)
``utils.floatToGoString`` (untyped)    prometheus-client 0.22.0 and 0.26.0
``fluxgate.listeners.prometheus``      fluxgate 0.9.4 (``<0.10`` is pinned)
``_STATE_GAUGE``, ``_STATE_TRANSITION``
``fluxgate.circuitbreaker``            fluxgate 0.9.4
``_classify_slow``,
``_collect_slow_thresholds``, a
breaker's ``_slow_thresholds``
a breaker's ``_handlers`` (each        fluxgate 0.9.4 (``CircuitBreaker``, ``AsyncCircuitBreaker``;
state's ``execute``), ``_tracker``,    every call path enters ``_state.execute``, a handler of
``_tripper``, ``_window``,             ``_handlers``; ``_tracker`` is read at each failure,
``_consecutive_failures``              ``_tripper`` at each evaluation, which opens the circuit
                                       when true in closed, or in half-open after a failure)
``Histogram._buckets``, ``._sum``      prometheus-client 0.22.0 and 0.26.0 (a child's values,
                                       per bucket not cumulative; file-backed in multiprocess
                                       mode)
``EventLoopToken.backend_class``       anyio 4.16.0, lowest and latest (the token is documented as
``.run_sync_soon``                     opaque; its backend's ``run_sync_soon`` exists since 4.16)
``MemoryObjectReceiveStream._state``   anyio 4.16.0, lowest and latest (a ``deque``; nothing else
``.buffer``                            holds sent items while no sender awaits ``send()``)
``MemoryObjectStreamState``            anyio 4.16.0, lowest and latest (what ``receive()`` does,
``.waiting_receivers``,                minus its ``checkpoint()`` and ``receive_nowait()``; and
``memory._MemoryObjectItemReceiver``   ``send_nowait()``'s steps once no receiver waits and the
                                       buffer has room: an append to ``.buffer``)
``type(anyio.Event())`` made directly  anyio 4.16.0, lowest and latest (each backend's ``Event``
                                       subclass makes itself in ``__new__``; ``Event()`` looks the
                                       backend up through sniffio first, at each call)
``trio.lowlevel.enable_ki_protection`` trio 0.32.0 and 0.35.0 (public, but only since 0.28 does
                                       it mark the function itself, so that it can be applied
                                       after definition; before, it returned a wrapper)
``threading.RLock._is_owned``          CPython 3.10 to 3.14 (the C ``_thread.RLock``, and the
                                       Python one; ``threading.Condition`` relies on it)
=====================================  =========================================================

Reload survival: ``importlib.reload`` re-runs a module in its old namespace, so module state made
with ``kept()`` (the apply lock, the sequence numbers, the per-registry families...) is found
again instead of made anew; and objects made before a reload are instances of the previous copy
of their class, which ``same_class()`` recognises by module and qualified name. Fork hooks are
registered once per process the same way (``at_fork()``), and call the module's current code.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Sized
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from anyio import Event
from anyio.streams import memory as _memory
from prometheus_client import utils as _prometheus_utils
from prometheus_client import values as _values

with warnings.catch_warnings():
    # In multiprocess mode, upstream's import-time clear() of its (empty) metrics warns that
    # clearing is not implemented there. It clears nothing; the user did not ask for it.
    warnings.filterwarnings(
        "ignore", "Clearing labels has not been implemented in multi-process mode", UserWarning
    )
    from fluxgate.listeners import prometheus as _upstream

from fluxgate import circuitbreaker as _circuitbreaker
from fluxgate import trippers as _trippers

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import MutableSequence

    from anyio.lowlevel import EventLoopToken
    from anyio.streams.memory import MemoryObjectReceiveStream
    from fluxgate.state import State
    from fluxgate.trackers import Tracker
    from fluxgate.trippers import CallContext, Tripper
    from fluxgate.windows import Window
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics import MetricWrapperBase

__all__ = [
    "Value",
    "at_fork",
    "breaker_context",
    "breaker_handlers",
    "breaker_state",
    "breaker_tracker",
    "breaker_tripper",
    "call_soon",
    "classify_slow",
    "collect_slow_thresholds",
    "event_class",
    "format_float",
    "histogram_add",
    "kept",
    "ki_protected",
    "labelnames",
    "multiprocess",
    "owned",
    "protect_from_keyboard_interrupt",
    "registered",
    "same_class",
    "set_breaker_tracker",
    "set_breaker_tripper",
    "slow_thresholds",
    "stream_buffer",
    "stream_receivers",
    "unlocked",
    "upstream_state_gauge",
    "upstream_transition_counter",
    "value_class",
    "value_of",
    "values_free",
    "wait_for_item",
]

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., object])

# -- reload survival -------------------------------------------------------------------------------

#: The objects ``kept()`` made, by key. This very dict survives a reload of this module the same
#: way: the reloaded module finds it in its old namespace.
_KEPT: dict[str, object] = cast("dict[str, object]", globals().get("_KEPT")) or {}


def kept(key: str, make: Callable[[], _T]) -> _T:
    """Return the process's one object for ``key``, made by ``make()`` the first time.

    Module state that identifies something outside the module (a lock that other code holds, the
    sequence numbers already handed out, the metric objects already registered) must not be made
    anew when ``importlib.reload`` re-runs the module: the old and new code would then disagree.
    """
    try:
        return cast("_T", _KEPT[key])
    except KeyError:
        made = _KEPT[key] = make()
        return made


def same_class(obj: object, cls: type) -> bool:
    """Whether ``obj`` is an instance of ``cls``, or of a copy of ``cls`` from before a reload.

    A copy is recognised by its top-level package and qualified name, where ``isinstance`` would
    fail. (The package only: public classes are re-exported with ``__module__`` set to the
    package, so a class and its reloaded copy may name different modules of it.)
    """
    if isinstance(obj, cls):
        return True
    origin = _origin(cls)
    return any(_origin(kind) == origin for kind in type(obj).__mro__)


def _origin(kind: type) -> tuple[str, str]:
    return kind.__module__.partition(".")[0], kind.__qualname__


def at_fork(
    key: str,
    *,
    before: Callable[[], object] | None = None,
    after_in_parent: Callable[[], object] | None = None,
    after_in_child: Callable[[], object] | None = None,
) -> None:
    """``os.register_at_fork`` once per process for ``key``, however often the caller is reloaded.

    Each hook must be a module-level function: what runs at a fork is the function of that name
    in its module *then*, so that after ``importlib.reload`` the module's current code runs (a
    reload re-binds the names; it cannot undo a registration). Where ``os.register_at_fork`` does
    not exist (Windows), there is no fork, and nothing to do.
    """

    def register() -> bool:
        if hasattr(os, "register_at_fork"):
            hooks = {
                name: late_bound(hook)
                for name, hook in (
                    ("before", before),
                    ("after_in_parent", after_in_parent),
                    ("after_in_child", after_in_child),
                )
                if hook is not None
            }
            os.register_at_fork(**hooks)
        return True

    kept(f"at_fork.{key}", register)


def late_bound(function: Callable[[], object]) -> Callable[[], None]:
    """A call of the module-level function named like ``function``, looked up when it runs.

    What a registration kept across ``importlib.reload`` calls: the module's current code.
    """
    module, name = function.__module__, function.__name__

    def call() -> None:
        cast("Callable[[], object]", getattr(sys.modules[module], name))()

    return call


# -- the standard library --------------------------------------------------------------------------


def owned(lock: threading.RLock) -> bool:
    """Whether the calling thread holds ``lock``: ``RLock._is_owned``, which ``Condition`` uses."""
    return cast("bool", lock._is_owned())  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]  # private; no public way to ask


# -- prometheus_client -----------------------------------------------------------------------------


def registered(registry: CollectorRegistry, name: str) -> object | None:
    """The collector registered on ``registry`` under metric name ``name``, or ``None``.

    prometheus_client has no public lookup by name; this is the dict ``register()`` checks.
    """
    return registry._names_to_collectors.get(name)  # pyright: ignore[reportPrivateUsage]  # no public lookup


def labelnames(metric: MetricWrapperBase) -> tuple[str, ...]:
    """The label names a metric was created with (prometheus_client has no public accessor)."""
    return tuple(cast("tuple[str, ...]", metric._labelnames))  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]  # no public accessor


def unlocked(metric: MetricWrapperBase, children: Iterable[tuple[str, ...]]) -> bool:
    """Whether no thread holds ``metric``'s lock, nor that of any of ``children`` that exist.

    ``children``: label values. What writing them through ``labels()`` and ``set``/``inc``
    takes; a single-process metric only (a file-backed value shares one module-level lock).
    """
    if metric._lock.locked():  # pyright: ignore[reportPrivateUsage]  # see the table above
        return False
    made = cast("dict[tuple[str, ...], MetricWrapperBase]", metric._metrics)  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]  # see the table above
    for key in children:
        child = made.get(key)
        if child is not None and child._value._lock.locked():  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]  # see the table above
            return False
    return True


def values_free(*values: Value) -> bool:
    """Whether no thread holds the lock of any of ``values`` (what their ``set``/``inc`` take).

    ``unlocked`` for children's values in hand (``value_of``), when only their locks are taken.
    Single-process metrics only.
    """
    for value in values:  # noqa: SIM110  # not any(...): a generator's frame per value, on a lone call's path
        if value._lock.locked():  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]  # see the table above
            return False
    return True


def value_class() -> type:
    """prometheus_client's value class: file-backed in multiprocess mode. Fixed per process."""
    return cast("type", _values.ValueClass)


def multiprocess() -> bool:
    """Whether prometheus_client runs in multiprocess mode.

    That is, ``PROMETHEUS_MULTIPROC_DIR`` was set when prometheus_client was imported, so metric
    values live in per-process files that a ``MultiProcessCollector`` merges at scrape time.
    """
    return bool(getattr(_values.ValueClass, "_multiprocess", False))


class Value(Protocol):
    """A prometheus_client value (``values.ValueClass``): what a metric child writes to.

    ``Gauge.set(v)`` is ``set(float(v))`` once it has checked that the child is observable (a
    child always is), and ``Counter.inc(n)`` is ``inc(n)`` once it has checked ``n >= 0``: a
    writer that holds a child's value and passes values that pass those checks skips three
    Python frames per write (see ``value_of``).
    """

    def set(self, value: float) -> None:
        """Set the value to ``value``."""
        ...

    def inc(self, amount: float) -> None:
        """Add ``amount``."""
        ...


def value_of(child: Gauge | Counter) -> Value:
    """The value object of a metric child (one label set), to write it as ``set``/``inc`` do.

    For hot writes of children kept in hand: pass ``set`` a float and ``inc`` an amount above 0,
    as ``Gauge.set`` and ``Counter.inc`` would after their checks.
    """
    return cast("Value", child._value)  # pyright: ignore[reportPrivateUsage]  # see the table above


def histogram_add(child: Histogram, counts: MutableSequence[int], total: float) -> None:
    """Add many observations to a histogram child at once: what ``observe()`` does, in bulk.

    ``counts[i]`` observations fell in bucket ``i`` (the first bound at or above them, as
    ``observe()`` files them: a child's bucket values are not cumulative), and ``total`` is their
    sum. prometheus_client has no bulk ``observe()``; these are the values it increments.

    Resumable: each bucket's count is set to 0 once added, with no call between the increment
    and that mark (where no signal handler can run), and the sum is added last; so a call that a
    handler's exception interrupted, made again with the same ``counts``, adds only the rest.
    The caller marks the sum added the same way, right after the return.
    """
    buckets = cast("list[Value]", child._buckets)  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]  # no bulk observe()
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
            counts[index] = 0
    values = cast("Value", child._sum)  # pyright: ignore[reportPrivateUsage]  # as above
    values.inc(total)


#: A float formatted as prometheus_client formats ``le`` (``"0.5"``, ``"60.0"``, ``"+Inf"``).
format_float: Callable[[float], str] = cast(
    "Callable[[float], str]",
    _prometheus_utils.floatToGoString,  # pyright: ignore[reportUnknownMemberType]  # untyped argument upstream
)

# -- fluxgate --------------------------------------------------------------------------------------


def upstream_state_gauge() -> Gauge:
    """The ``circuit_breaker_state`` gauge of fluxgate's listener, on ``REGISTRY`` since its import.

    Shared on purpose: on the default registry, a process that also uses upstream's listener then
    writes the same series instead of failing with ``Duplicated timeseries``.
    """
    return _upstream._STATE_GAUGE  # pyright: ignore[reportPrivateUsage]  # shared on purpose, fluxgate<0.10


def upstream_transition_counter() -> Counter:
    """The ``circuit_breaker_state_transition`` counter of fluxgate's listener (see above)."""
    return _upstream._STATE_TRANSITION  # pyright: ignore[reportPrivateUsage]  # as above


#: fluxgate's slow-call rule: the ``SlowRate`` thresholds that a call of ``duration`` reaches.
classify_slow: Callable[[float, tuple[float, ...]], tuple[float, ...]] = (
    _circuitbreaker._classify_slow  # pyright: ignore[reportPrivateUsage]  # upstream's rule, reused
)


def collect_slow_thresholds(tripper: Tripper) -> tuple[float, ...]:
    """The ``SlowRate`` thresholds of ``tripper``, walked as fluxgate's breakers walk them."""
    return _circuitbreaker._collect_slow_thresholds(tripper)  # pyright: ignore[reportPrivateUsage]  # upstream's walk, reused


def slow_thresholds(breaker: object) -> object:
    """A fluxgate breaker's own ``SlowRate`` thresholds (its ``_slow_thresholds``), or ``()``.

    Any object may come in: the caller checks what comes out.
    """
    return cast("object", getattr(breaker, "_slow_thresholds", ()))


def breaker_handlers(breaker: object) -> list[object]:
    """A breaker's state handlers (``_handlers``): each state's ``execute``, every call's path.

    fluxgate's ``CircuitBreaker`` and ``AsyncCircuitBreaker`` (and ``AnyioCircuitBreaker``, built
    the same way) enter every call (``call``, ``call_with_fallback``, the decorator) through
    ``self._state.execute``, ``_state`` being one of these objects.
    """
    handlers = cast("dict[str, object]", getattr(breaker, "_handlers"))  # noqa: B009  # private, fluxgate 0.9.4
    return list(handlers.values())


def breaker_tracker(breaker: object) -> Tracker:
    """The tracker a breaker asks whether an exception is a failure (its ``_tracker``)."""
    return cast("Tracker", getattr(breaker, "_tracker"))  # noqa: B009  # private, fluxgate 0.9.4


def set_breaker_tracker(breaker: object, tracker: Tracker) -> None:
    """Give a breaker another tracker; it reads ``_tracker`` at each failure, so this is live."""
    setattr(breaker, "_tracker", tracker)  # noqa: B010  # private, fluxgate 0.9.4


def breaker_state(breaker: object) -> State:
    """The state a breaker is in (its ``_state.state``), without building an ``info()``."""
    return cast("State", getattr(breaker, "_state").state)  # noqa: B009  # private, fluxgate 0.9.4


def breaker_tripper(breaker: object) -> Tripper:
    """The tripper a breaker evaluates after each recorded call (its ``_tripper``)."""
    return cast("Tripper", getattr(breaker, "_tripper"))  # noqa: B009  # private, fluxgate 0.9.4


def set_breaker_tripper(breaker: object, tripper: Tripper) -> None:
    """Give a breaker another tripper; it reads ``_tripper`` at each evaluation: live."""
    setattr(breaker, "_tripper", tripper)  # noqa: B010  # private, fluxgate 0.9.4


def breaker_context(breaker: object, state: State) -> CallContext:
    """What the breaker would hand its tripper now, in ``state``: its window and its streak."""
    window = cast("Window", getattr(breaker, "_window"))  # noqa: B009  # private, fluxgate 0.9.4
    failures = cast("int", getattr(breaker, "_consecutive_failures"))  # noqa: B009  # as above
    return _trippers.CallContext(
        metric=window.get_metric(), state=state, consecutive_failures=failures
    )


# -- anyio -----------------------------------------------------------------------------------------


def call_soon(token: EventLoopToken, function: Callable[[], object]) -> None:
    """Schedule ``function()`` on the event loop of ``token`` from any thread, without waiting.

    anyio's public ways to reach a loop from a thread (``anyio.from_thread``) wait for the
    result; a producer must never wait for the loop. This uses the backend's ``run_sync_soon``
    behind the (documented as opaque) token.

    Raises:
        RuntimeError: the loop has finished (``anyio.RunFinishedError`` is one).
    """
    token.backend_class.run_sync_soon(function, (), token.native_token)


def stream_buffer(receive: MemoryObjectReceiveStream[_T]) -> deque[_T]:
    """The buffer of the memory object stream ``receive`` receives from, oldest item first.

    For a consumer that must take items off it in one step that no signal handler can interrupt
    (``list.extend`` over ``deque.popleft``, all in C): ``receive_nowait()`` is Python code, and a
    ``SystemExit`` raised between its ``popleft()`` and its ``return`` would lose the item. Only
    valid while no task awaits ``send()`` on the stream (we never ``await send()``).
    """
    return receive._state.buffer  # pyright: ignore[reportPrivateUsage]  # see above


def stream_receivers(receive: MemoryObjectReceiveStream[_T]) -> Sized:
    """The receivers waiting on the stream ``receive`` receives from: empty when none waits.

    While it is empty, and the stream is open, with fewer than ``max_buffer_size`` items,
    ``send_nowait(item)`` is exactly ``stream_buffer(receive).append(item)`` (anyio hands an item
    to a waiting receiver first, and raises only for a closed or full stream): a producer on the
    event loop's hottest path checks this and appends, one C call, instead of anyio's Python
    method.
    """
    return receive._state.waiting_receivers  # pyright: ignore[reportPrivateUsage]  # see above


def event_class() -> type[Event]:
    """The running backend's ``anyio.Event`` subclass: ``event_class()()`` is an ``Event()``.

    In an async context only. An ``Event()`` asks sniffio which backend runs, at every call; a
    consumer that makes one per wait asks once, when it starts.
    """
    return type(Event())


async def wait_for_item(
    receive: MemoryObjectReceiveStream[_T], into: list[_T], make_event: type[Event]
) -> None:
    """Wait, on an empty stream, for the next item sent to it, and append it to ``into``.

    ``receive()`` without its loss: anyio's ``receive()`` holds the item a sender handed it in a
    local until it returns, so an exception in between (a cancellation after the hand-over, a
    ``SystemExit`` from a signal handler in its ``finally``) drops it. Here the hand-over is
    checked in a ``finally`` whose first two steps no signal handler can come between (a
    ``del``, an attribute read and a C call), so the item is in ``into`` or still unsent.
    Call it when the stream's buffer is empty and no other task receives from it. If an item
    reached the buffer after all before this wait was registered (a signal handler sent it
    after the caller's last look), it returns at once, leaving the item in the buffer: it never
    waits on a buffer that holds one.
    """
    state = receive._state  # pyright: ignore[reportPrivateUsage]  # see above
    waiting = state.waiting_receivers
    receiver = _memory._MemoryObjectItemReceiver[_T]()  # pyright: ignore[reportPrivateUsage]  # see above
    event = make_event()
    waiting[event] = receiver
    try:
        # Registered: from here on a send hands its item to us. Anything sent before is in the
        # buffer, and the caller takes it next.
        if not state.buffer:
            await event.wait()
    finally:
        # Not contextlib.suppress: it is Python code, inside which a signal handler could run.
        try:  # noqa: SIM105  # see above
            del waiting[event]
        except KeyError:
            pass  # handed an item: the sender took us off the list
        try:  # noqa: SIM105  # see above
            into.append(receiver.item)
        except AttributeError:
            pass  # woken without an item (cancelled)


# -- trio ------------------------------------------------------------------------------------------

#: Functions marked with ``ki_protected``, protected once trio is imported.
_KI_FUNCTIONS: list[Callable[..., object]] = kept("ki_functions", list[Callable[..., object]])


def ki_protected(function: _F) -> _F:
    """Mark ``function`` KI-protected under trio: a Ctrl-C waits for its next checkpoint.

    trio is optional, so the mark is applied by ``protect_from_keyboard_interrupt()``, which the
    consumer calls when it starts (and at once, if trio is already imported). Since trio 0.28 the
    mark is kept on the function's code object: it costs nothing per call, and nothing at all on
    asyncio.
    """
    _KI_FUNCTIONS.append(function)
    if "trio" in sys.modules:
        protect_from_keyboard_interrupt()
    return function


def protect_from_keyboard_interrupt() -> None:
    """Apply trio's KI protection to every ``ki_protected`` function, if trio is imported."""
    if not _KI_FUNCTIONS or "trio" not in sys.modules:
        return
    from trio.lowlevel import enable_ki_protection  # noqa: PLC0415  # trio is optional

    while _KI_FUNCTIONS:
        enable_ki_protection(_KI_FUNCTIONS.pop())
