"""``meter_calls()``: every call through a breaker, counted by outcome and timed.

fluxgate's listeners see transitions only; a breaker's window (what ``watch()`` reads) is cleared
at every transition. ``meter_calls(breaker, name)`` attaches to an existing breaker, as
``watch()`` does, and exports two metrics per ``circuit_name``:

* ``circuit_breaker_calls_total{circuit_name, kind}``, a counter, ``kind`` one of
  ``successful`` (the call returned), ``failed`` (it raised an exception the breaker's tracker
  counts), ``ignored`` (it raised one the tracker does not count, or that the breaker did not
  ask the tracker about: in ``disabled``, or a ``ThreadSafeCircuitBreaker`` call that outlived
  its state), ``not_permitted`` (refused: open, forced open, half-open without a permit) and
  ``cancelled`` (ended by a ``BaseException`` that is not an ``Exception``: asyncio's
  ``CancelledError``, ``trio.Cancelled``, a ``move_on_after`` deadline, ``KeyboardInterrupt``;
  fluxgate's window records these neither as successes nor as failures).
* ``circuit_breaker_call_duration_seconds{circuit_name, kind}``, a histogram of the protected
  function's own duration, for ``successful``, ``failed`` and ``ignored`` (refused and cancelled
  calls have none).

* ``circuit_breaker_trips_total{circuit_name, reason}``: one per transition to open, labelled
  with the tripper's conditions that held then (``_catalogue.TRIP_REASONS``; several joined by
  ``+``; gates such as ``MinRequests`` are no reason). The breaker's tripper is wrapped to see it.
* ``circuit_breaker_shadow_trips_total{circuit_name}``: in ``metrics_only``, where fluxgate never
  asks the tripper, the meter asks it after each call, as ``closed`` would, and counts each time
  the answer turns true (once per crossing).

Every series exists at 0 from the start of metering, so ``rate()`` sees the first call.

How it hooks in (the only place that touches a breaker's insides, through ``_compat``, for
fluxgate 0.9.x): every way of calling fluxgate's breakers (``call``, ``call_with_fallback``,
``@cb``, ``@cb(fallback=...)``) enters its current state's ``execute``; each state's handler gets
its own ``execute`` (an instance attribute) that runs the original with the protected function
wrapped in a timer, and the breaker's tracker is wrapped so that its verdict on the exception the
function raised is noted. The breaker does exactly what it did: the same calls in the same order,
the same results, the same exception objects (re-raised, so a traceback shows one more frame of
ours per wrapper), the same transitions and listeners. A ``ThreadSafeCircuitBreaker`` is metered
at its ``call`` (every path of it goes there), outside its lock.

Transport: a call's outcome is a ``(kind, duration)`` pair. On the consumer's own thread (the
event loop's), it is appended to the meter's ``CallQueue``, and only the first call since the
consumer last took them queues an item (the queue itself, as a marker) on the stream: one
enqueue per batch, not per call. From any other thread, it is one item on the breaker's pipeline,
by the same paths as a transition (``PipelineState.submit``: the thread bridge or the overflow
queue); with no consumer, a direct write. While a consumer runs, the caller pays one append (or
one enqueue), never a prometheus_client write or a lock a scrape takes. The consumer folds a
batch's calls per circuit: counts summed per kind, durations filed into bucket counts, then one
increment per series (``_compat.histogram_add``: prometheus_client has no bulk ``observe()``).
Exact on every path: the series count every call metered, once.

Concurrency: a call's frames own its record (``_Call``); the only state shared between calls is
``_RAISED``, one slot per thread, written when the protected function raises and read by the
tracker at once (the breaker asks it with no ``await`` between, so no other call of that thread
runs in between). Producers (any thread) only read a meter's ``_closed`` and queue (the loop
thread alone appends to its ``CallQueue``, and only its series' ``write`` takes from it, under
``APPLY_LOCK``); every ``_CallSeries`` and family is used with ``APPLY_LOCK`` held, by the
consumer or a direct apply, as every ``Target`` is. Metering (and ``close()``) swaps the
breaker's attributes one at a time: a call already running keeps the path it started on.

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): both metrics are prometheus_client's own
``Counter`` and ``Histogram``, so their values are file-backed and a ``MultiProcessCollector``
sums them over the workers; ``close()`` cannot remove series there: they keep their totals.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from bisect import bisect_left
from itertools import repeat, starmap
from typing import TYPE_CHECKING, Any, Final, cast

from fluxgate.circuitbreaker import AsyncCircuitBreaker, CircuitBreaker
from fluxgate.errors import CallNotPermittedError
from fluxgate.trackers import Tracker
from fluxgate.trippers import (
    AvgLatency,
    Closed,
    FailureRate,
    FailureStreak,
    HalfOpened,
    MinRequests,
    SlowRate,
    Tripper,
)
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from fluxgate_stream._apply import CallQueue, holding
from fluxgate_stream._catalogue import (
    CALL_DURATION,
    CALL_DURATION_KINDS,
    CALL_KINDS,
    CALLS,
    SHADOW_TRIPS,
    TRIP_REASONS,
    TRIPS,
)
from fluxgate_stream._checks import check_buckets, check_name, check_registry
from fluxgate_stream._circuits import circuit_for
from fluxgate_stream._compat import (
    breaker_context,
    breaker_handlers,
    breaker_state,
    breaker_tracker,
    breaker_tripper,
    format_float,
    histogram_add,
    kept,
    multiprocess,
    registered,
    set_breaker_tracker,
    set_breaker_tripper,
    value_class,
)
from fluxgate_stream._handles import Closing
from fluxgate_stream._queue import PipelineState
from fluxgate_stream.anyio_breaker import AnyioCircuitBreaker
from fluxgate_stream.pipeline import resolve_pipeline
from fluxgate_stream.threadsafe_breaker import ThreadSafeCircuitBreaker

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

    from fluxgate.signal import Signal
    from fluxgate.trippers import CallContext

    from fluxgate_stream._apply import Call, Pending
    from fluxgate_stream.pipeline import SignalPipeline

__all__ = ["DEFAULT_BUCKETS", "CallMeter", "meter_calls"]

#: The default bucket bounds of ``circuit_breaker_call_duration_seconds``, in seconds: remote
#: calls, from a 5 ms cache hit to a 30 s timeout (``+Inf`` is added).
DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The kinds, as queued: indexes into CALL_KINDS. _ZERO asks for the series at 0, _SHADOW counts
# a shadow trip; a trip is queued as its reason label (a str).
_SUCCESSFUL: Final = 0
_FAILED: Final = 1
_IGNORED: Final = 2
_NOT_PERMITTED: Final = 3
_CANCELLED: Final = 4
_ZERO: Final = -1
_SHADOW: Final = -2

_get_ident = threading.get_ident
_perf_counter = time.perf_counter


#: One call's outcome, as the timer and the tracker saw it, owned by the call's frames: a list (a
#: third of the cost of a small object, on the hot path) of ``[duration, error, verdict]``: the
#: protected function's duration once it returned or raised (else ``None``), what it raised (else
#: ``None``), and the tracker's answer about that, if it was asked (else ``None``).
_Call = list[Any]


#: The call whose function has just raised, on this thread, until the breaker asks its tracker
#: about the exception. Between the two, no other code of this thread runs a call (the breaker
#: asks at once, with no ``await`` in between), so one slot per thread suffices.
_RAISED = threading.local()


def _timed(call: _Call, func: Callable[..., object], /, *args: object, **kwargs: object) -> object:
    """Run the protected function, noting its duration and what it raised, in ``call``."""
    start = _perf_counter()
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:
        call[0] = _perf_counter() - start
        call[1] = exc
        _RAISED.call = call
        raise
    call[0] = _perf_counter() - start
    return result


async def _timed_async(
    call: _Call, func: Callable[..., Awaitable[object]], /, *args: object, **kwargs: object
) -> object:
    """``_timed``, awaited."""
    start = _perf_counter()
    try:
        result = await func(*args, **kwargs)
    except BaseException as exc:
        call[0] = _perf_counter() - start
        call[1] = exc
        _RAISED.call = call
        raise
    call[0] = _perf_counter() - start
    return result


class _NotingTracker(Tracker):
    """The breaker's tracker, its verdict on a metered call's exception noted in the call."""

    def __init__(self, tracker: Tracker, meter: CallMeter) -> None:
        self.tracker: Final = tracker
        self.meter: Final = meter

    def __call__(self, exception: Exception) -> bool:
        verdict = self.tracker(exception)
        call: _Call | None = getattr(_RAISED, "call", None)
        if call is not None and call[1] is exception:
            call[2] = bool(verdict)
            _RAISED.call = None
        return verdict


#: fluxgate's tripper conditions, by the ``reason`` they are exported as. Gates (``MinRequests``,
#: ``Closed``, ``HalfOpened``) say when the conditions count, not why a circuit trips.
_REASONS: Final[tuple[tuple[type[Tripper], str], ...]] = (
    (FailureRate, "failure_rate"),
    (SlowRate, "slow_rate"),
    (AvgLatency, "avg_latency"),
    (FailureStreak, "failure_streak"),
)
_GATES: Final = (MinRequests, Closed, HalfOpened)


def _conditions(tripper: Tripper) -> list[tuple[Tripper, str]]:
    """The conditions of a tripper tree (its leaves, gates left out), each with its reason."""
    try:
        leaves = list(tripper)
    except TypeError:  # not iterable (a tripper that is no fluxgate Tripper): one condition
        leaves = [tripper]
    found: list[tuple[Tripper, str]] = []
    for leaf in leaves:
        if isinstance(leaf, _GATES):
            continue
        reason = next((name for kind, name in _REASONS if isinstance(leaf, kind)), "other")
        found.append((leaf, reason))
    return found


def _reason(conditions: list[tuple[Tripper, str]], ctx: CallContext) -> str:
    """The ``reason`` label of a trip: every condition that holds in ``ctx``, joined by ``+``."""
    held: set[str] = set()
    for condition, reason in conditions:
        try:
            holds = bool(condition(ctx))
        except Exception:  # noqa: BLE001  # a custom condition's failure is no reason to fail the call
            holds = False
        if holds:
            held.add(reason)
    return "+".join(reason for reason in TRIP_REASONS if reason in held) or "other"


class _NotingTripper(Tripper):
    """The breaker's tripper, each trip it decides counted with its reason.

    fluxgate's breakers (and ours) open the circuit exactly when the tripper answers true in
    ``closed``, or in ``half_open`` after a failure (a non-zero streak; after a success the
    streak is 0 and a true answer keeps the circuit half-open), for the pinned fluxgate 0.9.x.
    The reason is computed there and then, before the transition clears the window.
    """

    def __init__(self, tripper: Tripper, meter: CallMeter) -> None:
        self.tripper: Final = tripper
        self.meter: Final = meter
        self.conditions: Final = _conditions(tripper)

    def __call__(self, ctx: CallContext) -> bool:
        verdict = self.tripper(ctx)
        if verdict and (
            ctx.state == "closed" or (ctx.state == "half_open" and ctx.consecutive_failures > 0)
        ):
            self.meter._record(_reason(self.conditions, ctx), None)  # pyright: ignore[reportPrivateUsage]  # this module's
        return verdict

    def __iter__(self) -> Iterator[Tripper]:
        return iter(self.tripper)


# -- the series ------------------------------------------------------------------------------------


class _Totals:
    """A batch's calls of one kind: how many, and their durations filed into buckets."""

    __slots__ = ("buckets", "count", "sum", "timed")

    def __init__(self, size: int) -> None:
        self.count = 0
        self.timed = 0
        self.sum = 0.0
        self.buckets = [0] * size


class _Family:
    """One registry's two metrics, their buckets, and its circuits' series by name."""

    __slots__ = ("bounds", "calls", "durations", "multiprocess", "series", "shadow", "trips")

    def __init__(  # the family's metrics
        self,
        calls: Counter,
        durations: Histogram,
        trips: Counter,
        shadow: Counter,
        bounds: tuple[float, ...],
    ) -> None:
        self.calls: Final = calls
        self.durations: Final = durations
        self.trips: Final = trips
        self.shadow: Final = shadow
        self.bounds: Final = bounds
        self.multiprocess: Final = multiprocess()
        self.series: dict[str, _CallSeries] = {}


class _CallSeries:
    """The call series of one ``circuit_name`` in one registry: the ``Target`` of its calls.

    Every method runs with ``APPLY_LOCK`` held (the apply core's rule for targets).
    """

    __slots__ = ("_counters", "_histograms", "_trips", "closed_seq", "family", "fold", "name")

    #: Each kind's totals leave ``pending`` once written (see ``write``).
    resumable = True

    def __init__(self, name: str, family: _Family) -> None:
        self.name: str = name
        self.family: Final = family
        self.closed_seq: int = -1
        self.fold: Callable[[Pending, int, Signal], None] | None = None
        self._counters: dict[int, Counter] = {}
        self._histograms: dict[int, Histogram] = {}
        self._trips: dict[str, Counter] = {}

    def __repr__(self) -> str:
        return f"<calls of {self.name!r}>"

    def write(self, pending: Pending) -> None:
        """Apply a tally's record: the meters' queued calls taken, a ``close()``, then the calls.

        A record with a ``close()`` holds the direct and bridged calls queued after it (those
        before it were voided as they were added), and the queues of meters whose marker came
        before or after it. A queue made before the close may hold calls made before it, and
        is dropped with the series (in multiprocess mode, which keeps the series, counted), as
        is a closed meter's; a queue made after it (``CallQueue.born``: a meter made since,
        under the same name) holds only later calls, which count. Every queue is disarmed,
        whatever becomes of its calls.

        Resumable: the queues' calls move into ``pending`` before anything is written, the calls
        are folded into totals kept there, and each kind's totals leave it once written, so a
        write interrupted (a signal handler's exception) and run again writes only the rest.
        """
        folded: object = pending.folded
        if type(folded) is dict:  # totals an interrupted write left (after its close): the rest
            self._write_totals(pending)
        queues = pending.queues
        if queues:
            keep = self.family.multiprocess  # close() keeps the series there: count what it held
            close_seq = pending.close_seq  # -1: no close(), older than every queue
            calls = cast("list[Call] | None", pending.folded)
            if calls is None:
                fresh: list[Call] = []
                calls = pending.folded = fresh
            while queues:
                queue = queues[-1]
                # Disarm before taking: a call appended from here on queues a marker again.
                queue.armed = False
                if not keep and (queue.closed or queue.born < close_seq):
                    queue.clear()  # dropped with the series
                else:
                    # In C, no handler runs inside: each call is in its queue or in calls.
                    calls.extend(starmap(queue.popleft, repeat((), len(queue))))
                queues.pop()
            pending.queues = None
        if pending.close_seq >= 0:
            self.drop(pending.close_seq)
            pending.close_seq = -1
        calls_left = cast("list[Call] | None", pending.folded)
        if calls_left is None:
            return
        pending.folded = self._fold(calls_left)
        self._write_totals(pending)

    def _write_totals(self, pending: Pending) -> None:
        """Write ``pending.folded``'s totals, each kind's leaving it once written."""
        totals = cast("dict[int | str, _Totals]", pending.folded)
        while totals:
            kind = next(iter(totals))
            self._add(kind, totals[kind])
            del totals[kind]
        pending.folded = None

    def _fold(self, calls: list[Call]) -> dict[int | str, _Totals]:
        bounds = self.family.bounds
        size = len(bounds)
        totals: dict[int | str, _Totals] = {}
        for kind, duration in calls:
            each = totals.get(kind)
            if each is None:
                each = totals[kind] = _Totals(size)
            each.count += 1
            if duration is not None:
                each.timed += 1
                each.sum += duration
                each.buckets[bisect_left(bounds, duration)] += 1
        return totals

    def _add(self, kind: int | str, totals: _Totals) -> None:
        """Write one kind's totals. Resumable, as ``write`` needs.

        Each part is marked written right after its increment, with no call in between, so no
        signal handler can run there: ``count`` set to 0 after the counter's, each bucket's count
        in ``histogram_add``, and ``timed`` after the histogram's sum. A write interrupted and
        run again adds only the rest. The one window left is inside a prometheus_client increment,
        after it counted, as for a transition (``_circuits.Circuit.write``).
        """
        if isinstance(kind, str):  # trips, by reason
            if totals.count:
                self._trip(kind).inc(totals.count)
                totals.count = 0
            return
        if kind == _ZERO:
            self.zero()  # creates what is absent: idempotent
            return
        if totals.count:
            if kind == _SHADOW:
                self.family.shadow.labels(self.name).inc(totals.count)
            else:
                self._counter(kind).inc(totals.count)
            totals.count = 0
        if totals.timed:
            histogram_add(self._histogram(kind), totals.buckets, totals.sum)
            totals.timed = 0

    def _counter(self, kind: int) -> Counter:
        child = self._counters.get(kind)
        if child is None:
            child = self._counters[kind] = self.family.calls.labels(self.name, CALL_KINDS[kind])
        return child

    def _trip(self, reason: str) -> Counter:
        child = self._trips.get(reason)
        if child is None:
            child = self._trips[reason] = self.family.trips.labels(self.name, reason)
        return child

    def _histogram(self, kind: int) -> Histogram:
        child = self._histograms.get(kind)
        if child is None:
            child = self._histograms[kind] = self.family.durations.labels(
                self.name, CALL_KINDS[kind]
            )
        return child

    def zero(self) -> None:
        """Create every series at 0 where absent (``labels()`` keeps a value that exists)."""
        for kind in range(len(CALL_KINDS)):
            self._counter(kind)
        for kind in range(len(CALL_DURATION_KINDS)):
            self._histogram(kind)
        for reason in TRIP_REASONS:
            self._trip(reason)
        self.family.shadow.labels(self.name)

    def drop(self, seq: int) -> None:
        """Remove this name's series (in multiprocess mode, where none can be, keep them)."""
        if not self.family.multiprocess:
            for kind in CALL_KINDS:
                self.family.calls.remove(self.name, kind)
            for kind in CALL_DURATION_KINDS:
                self.family.durations.remove(self.name, kind)
            for reason in {*TRIP_REASONS, *self._trips}:
                self.family.trips.remove(self.name, reason)
            self.family.shadow.remove(self.name)
            self._counters.clear()
            self._histograms.clear()
            self._trips.clear()
        self.closed_seq = max(self.closed_seq, seq)


# Kept across importlib.reload, so that a reload neither forgets series nor registers twice.
_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Family] = kept(
    "calls.families", weakref.WeakKeyDictionary[CollectorRegistry, _Family]
)
_MULTIPROCESS_FAMILIES: weakref.WeakKeyDictionary[type, _Family] = kept(
    "calls.multiprocess_families", weakref.WeakKeyDictionary[type, _Family]
)


def _shown(bounds: tuple[float, ...]) -> str:
    return "(" + ", ".join(format_float(bound) for bound in bounds) + ")"


def _family(registry: CollectorRegistry, bounds: tuple[float, ...] | None) -> _Family:
    """The registry's family, made with ``bounds`` (``None``: the default) if it is new.

    Caller holds APPLY_LOCK.

    Raises:
        ValueError: the family exists with other buckets; the registry holds another collector
            under one of the two names.
    """
    if multiprocess():
        families, key = _MULTIPROCESS_FAMILIES, value_class()
    else:
        families, key = _FAMILIES, registry
    family = families.get(key)  # pyright: ignore[reportArgumentType, reportCallIssue]  # one of the two keys
    if family is None:
        made = bounds or check_buckets(DEFAULT_BUCKETS)
        target = None if families is _MULTIPROCESS_FAMILIES else registry
        if target is not None:
            for spec in (CALLS, CALL_DURATION, TRIPS, SHADOW_TRIPS):
                if registered(target, spec.name) is not None:
                    raise ValueError(
                        f"registry already has a collector named {spec.name!r}, not "
                        "fluxgate-stream's"
                    )
        calls = Counter(CALLS.name, CALLS.help, CALLS.labels, registry=target)
        durations = Histogram(
            CALL_DURATION.name,
            CALL_DURATION.help,
            CALL_DURATION.labels,
            registry=target,
            buckets=made,
        )
        trips = Counter(TRIPS.name, TRIPS.help, TRIPS.labels, registry=target)
        shadow = Counter(SHADOW_TRIPS.name, SHADOW_TRIPS.help, SHADOW_TRIPS.labels, registry=target)
        family = _Family(calls, durations, trips, shadow, made)
        families[key] = family  # pyright: ignore[reportArgumentType]  # as above
    elif bounds is not None and bounds != family.bounds:
        raise ValueError(
            f"buckets must be those this registry's {CALL_DURATION.name} has, "
            f"{_shown(family.bounds)}, got {_shown(bounds)}"
        )
    return family


# -- the handle ------------------------------------------------------------------------------------


class CallMeter(Closing):
    """The metering of one breaker's calls under one ``circuit_name``. Made by ``meter_calls()``.

    ``close()`` it, or use it as a context manager, to stop metering: the breaker is given back
    its own call path and the name's series are dropped, as ``PrometheusListener.close()`` drops
    its own (ordered after the calls already queued), whoever wrote them: with several meters of
    one name, the others' calls made while the close is queued may be dropped with them (their
    later calls count). Calls still running when it closes are not counted. In multiprocess
    mode, where the series stay, every call that ended before the close counts.

    Attributes:
        name: the ``circuit_name`` label value.
        breaker: the metered breaker.
        pipeline: the pipeline its calls go through.
    """

    __slots__ = (
        "_closed",
        "_lock",
        "_queue",
        "_state",
        "_target",
        "_undo",
        "breaker",
        "name",
        "pipeline",
    )

    def __init__(
        self,
        breaker: object,
        name: str,
        pipeline: SignalPipeline,
        target: _CallSeries,
        paths: tuple[object, list[tuple[object, str]]],
    ) -> None:
        """Meter ``breaker``, once ``meter_calls()`` checked everything and found ``target``.

        ``paths`` is ``_paths(breaker)``: where to hook in.
        """
        self.breaker: Final = breaker
        self.name: Final = name
        self.pipeline: Final = pipeline
        self._state: Final = PipelineState.of(pipeline)
        self._target: Final = target
        self._closed = False
        self._lock: Final = threading.Lock()
        self._queue: Final = CallQueue(target)  # this meter's calls on the loop thread
        self._state.add_call_queue(self._queue)
        self._undo: Final = _attach(*paths, self)
        self._record(_ZERO, None)  # the series at 0, ordered after a close() still queued

    def __repr__(self) -> str:
        status = "closed" if self._closed else "active"
        return f"<CallMeter {self.name!r} {status}>"

    @property
    def active(self) -> bool:
        """Whether calls are still metered (not closed)."""
        return not self._closed

    def _record(self, kind: int | str, duration: float | None) -> None:
        """Queue one call's outcome: the caller's whole cost while a consumer runs. Any thread.

        On the consumer's thread, an append to the meter's ``CallQueue``, and a marker on the
        stream only if none is queued (see ``CallQueue``); from any other thread, or with no
        consumer, ``PipelineState.submit``.
        """
        if self._closed:
            return
        state = self._state
        if state.loop_thread == _get_ident():
            # The consumer runs on this thread, so it cannot take from the queue, nor stop,
            # before this returns (a signal handler's call of the same meter only appends too).
            queue = self._queue
            queue.append((kind, duration))
            if not queue.armed:
                state.mark(queue)
            return
        state.submit(self._target, (kind, duration))

    def _ended(self, call: _Call, exc: BaseException) -> None:
        """Record a call that raised ``exc`` (see the module docstring for the kinds)."""
        if getattr(_RAISED, "call", None) is call:
            _RAISED.call = None  # the tracker was not asked: let go of the exception
        if not isinstance(exc, Exception):
            self._record(_CANCELLED, None)
        elif call[1] is exc:
            self._record(_FAILED if call[2] else _IGNORED, call[0])
        elif call[0] is None and isinstance(exc, CallNotPermittedError):
            self._record(_NOT_PERMITTED, None)
        else:  # raised by the breaker itself, not by the function
            self._record(_IGNORED, call[0])

    def close(self) -> None:
        """Stop metering and drop the name's series. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._undo()
        state = self._state
        queue = self._queue
        queue.closed = True  # what it holds is not counted (but in multiprocess mode)
        state.discard_call_queue(queue)
        if queue and not queue.armed:  # calls a signal handler left unmarked
            state.submit(self._target, queue)
        state.submit(self._target, None)


def _sync_path(
    run: Callable[..., object], meter: CallMeter, after: Callable[[], None] | None
) -> Callable[..., object]:
    """``run`` (a handler's ``execute``, or a breaker's ``call``), metered; then ``after()``."""
    ended = meter._ended  # pyright: ignore[reportPrivateUsage]  # the meter's own paths
    state = meter._state  # pyright: ignore[reportPrivateUsage]  # as above
    queue = meter._queue  # pyright: ignore[reportPrivateUsage]  # as above
    target = meter._target  # pyright: ignore[reportPrivateUsage]  # as above

    def execute(func: Callable[..., object], /, *args: object, **kwargs: object) -> object:
        if func is _timed:  # the breaker dispatching again (open -> half_open): metered already
            return run(func, *args, **kwargs)
        call: _Call = [None, None, None]
        try:
            result = run(_timed, call, func, *args, **kwargs)
        except BaseException as exc:
            ended(call, exc)
            if after is not None:
                after()
            raise
        # record(_SUCCESSFUL, call[0]), inlined: the one copy of CallMeter._record's body, on
        # the path issue #13's cost target measures (a passing sync call: a frame is ~1% of it).
        if not meter._closed:  # pyright: ignore[reportPrivateUsage]  # as above
            if state.loop_thread == _get_ident():
                queue.append((_SUCCESSFUL, call[0]))
                if not queue.armed:
                    state.mark(queue)
            else:
                state.submit(target, (_SUCCESSFUL, call[0]))
        if after is not None:
            after()
        return result

    return execute


def _async_path(
    run: Callable[..., Awaitable[object]], meter: CallMeter, after: Callable[[], None] | None
) -> Callable[..., Awaitable[object]]:
    """``_sync_path``, for an async handler's ``execute``."""
    ended = meter._ended  # pyright: ignore[reportPrivateUsage]  # the meter's own paths
    record = meter._record  # pyright: ignore[reportPrivateUsage]  # as above

    async def execute(
        func: Callable[..., Awaitable[object]], /, *args: object, **kwargs: object
    ) -> object:
        if func is _timed_async:  # dispatched again by the breaker: metered already
            return await run(func, *args, **kwargs)
        call: _Call = [None, None, None]
        try:
            result = await run(_timed_async, call, func, *args, **kwargs)
        except BaseException as exc:
            ended(call, exc)
            if after is not None:
                after()
            raise
        record(_SUCCESSFUL, call[0])
        if after is not None:
            after()
        return result

    return execute


def _paths(breaker: object) -> tuple[object, list[tuple[object, str]]]:
    """Where to meter ``breaker``: the breaker whose tracker to wrap, and the call paths.

    Raises:
        TypeError: ``breaker`` is none of the breakers this works on.
        ValueError: it is metered already.
    """
    if isinstance(breaker, ThreadSafeCircuitBreaker):
        owner: object = getattr(breaker, "_breaker")  # noqa: B009  # ours: the fluxgate breaker it drives
        paths: list[tuple[object, str]] = [(breaker, "call")]
    elif isinstance(breaker, CircuitBreaker | AsyncCircuitBreaker | AnyioCircuitBreaker):
        owner = breaker
        paths = [(handler, "execute") for handler in breaker_handlers(breaker)]
    else:
        raise TypeError(
            "breaker must be a fluxgate CircuitBreaker or AsyncCircuitBreaker, an "
            f"AnyioCircuitBreaker or a ThreadSafeCircuitBreaker, got {type(breaker).__name__}"
        )
    tracker = breaker_tracker(owner)
    if isinstance(tracker, _NotingTracker):
        raise ValueError(  # noqa: TRY004  # a breaker in the wrong state, not of the wrong type
            f"breaker is already metered, as {tracker.meter.name!r}; close() that meter first"
        )
    return owner, paths


def _shadow(owner: object, tripper: Tripper, meter: CallMeter) -> Callable[[], None]:
    """What runs after each call in ``metrics_only``: count the tripper's crossings.

    fluxgate never evaluates the tripper in ``metrics_only``; this asks it as the breaker would
    in ``closed``, with the window and streak as they are, and counts a shadow trip each time
    its answer goes from false to true (once per crossing, not once per call while over).
    """
    over = [False]

    def check() -> None:
        try:
            now = bool(tripper(breaker_context(owner, "closed")))
        except Exception:  # noqa: BLE001  # a custom tripper's failure must not fail the call
            now = False
        if now and not over[0]:
            meter._record(_SHADOW, None)  # pyright: ignore[reportPrivateUsage]  # this module's
        over[0] = now

    return check


def _under(lock: threading.RLock, owner: object, shadow: Callable[[], None]) -> Callable[[], None]:
    """``shadow``, for a ``ThreadSafeCircuitBreaker``: only in ``metrics_only``, under its lock."""

    def after() -> None:
        if breaker_state(owner) == "metrics_only":
            with lock:
                shadow()

    return after


def _attach(owner: object, paths: list[tuple[object, str]], meter: CallMeter) -> Callable[[], None]:
    """Meter the calls of ``paths``, ``owner``'s tracker and tripper (from ``_paths``).

    Returns what undoes it.
    """
    tracker = breaker_tracker(owner)
    tripper = breaker_tripper(owner)
    shadow = _shadow(owner, tripper, meter)
    set_breaker_tracker(owner, _NotingTracker(tracker, meter))
    set_breaker_tripper(owner, _NotingTripper(tripper, meter))
    # What the instances held under those names before (another wrapper's), given back by undo.
    before = [vars(obj).get(attribute) for obj, attribute in paths]
    for obj, attribute in paths:
        run = cast("Callable[..., object]", getattr(obj, attribute))
        after: Callable[[], None] | None = None
        if attribute == "call":  # a ThreadSafeCircuitBreaker: look at its breaker's state
            after = _under(cast("threading.RLock", getattr(obj, "_lock")), owner, shadow)  # noqa: B009  # ours
        elif getattr(obj, "state", None) == "metrics_only":  # that state's handler
            after = shadow
        if inspect.iscoroutinefunction(run):
            metered = _async_path(cast("Callable[..., Awaitable[object]]", run), meter, after)
        else:
            metered = _sync_path(run, meter, after)
        vars(obj)[attribute] = metered

    def undo() -> None:
        for (obj, attribute), previous in zip(paths, before, strict=True):
            if previous is None:
                vars(obj).pop(attribute, None)
            else:
                vars(obj)[attribute] = previous
        set_breaker_tracker(owner, tracker)
        set_breaker_tripper(owner, tripper)

    return undo


def meter_calls(
    breaker: object,
    name: str,
    registry: CollectorRegistry | None = None,
    *,
    pipeline: SignalPipeline | None = None,
    buckets: Iterable[float] | None = None,
) -> CallMeter:
    """Count and time every call through ``breaker`` under ``circuit_name=name``.

    Attaches to an existing breaker, as ``watch()`` does; see the module docstring for the
    metrics and their kinds. Works on fluxgate's ``CircuitBreaker`` (from any thread) and
    ``AsyncCircuitBreaker``, on ``AnyioCircuitBreaker`` (asyncio and trio) and on
    ``ThreadSafeCircuitBreaker``, for every way of calling them.

    Args:
        breaker: the breaker to meter; one meter at a time per breaker.
        name: the ``circuit_name`` label value, with the rules of ``PrometheusListener``'s
            (use the same name as its listener, so that calls and state join on it). It counts
            towards the registry's ``limit_circuits()`` cap as a listener's name does.
        registry: where the metrics live; ``None`` means ``prometheus_client.REGISTRY``.
        pipeline: the ``SignalPipeline`` that carries the calls' outcomes; ``None`` uses
            ``default_pipeline()``.
        buckets: the histogram's bucket bounds in seconds, increasing, above 0 (``+Inf`` is
            added); ``None`` uses the registry's (``DEFAULT_BUCKETS`` for the first meter of a
            registry). One set per registry: every meter of a registry shares its histogram.

    Returns:
        The meter: ``close()`` it, or use it as a context manager, to stop metering.

    Raises:
        TypeError: ``name`` is not a ``str``; ``registry`` is not a ``CollectorRegistry``;
            ``pipeline`` is not a ``SignalPipeline``; ``breaker`` is none of the four breakers;
            ``buckets`` is not an iterable of numbers.
        ValueError: ``name`` breaks the name rules; ``buckets`` are not increasing numbers above
            0, or differ from those the registry's histogram has; ``breaker`` is metered already;
            the registry holds another collector under one of the metric names.
        CircuitLimitError: ``name`` is new and the registry is at its ``limit_circuits()`` cap.

    Example:
        >>> from fluxgate import CircuitBreaker
        >>> from prometheus_client import CollectorRegistry
        >>> registry = CollectorRegistry()
        >>> cb = CircuitBreaker()
        >>> with meter_calls(cb, "payment_api", registry):
        ...     cb.call(lambda: "ok")
        ...     labels = {"circuit_name": "payment_api", "kind": "successful"}
        ...     registry.get_sample_value("circuit_breaker_calls_total", labels)
        'ok'
        1.0
    """
    name = check_name(name)
    registry = check_registry(registry)
    resolved = resolve_pipeline(pipeline)
    bounds = None if buckets is None else check_buckets(buckets)
    paths = _paths(breaker)
    target = REGISTRY if registry is None else registry
    with holding():  # a call deferred meanwhile is applied as the block ends
        family = _family(target, bounds)
        series = family.series.get(name)
        if series is None:
            circuit_for(registry, name, None)  # the cap: a new name counts as a listener's does
            series = family.series[name] = _CallSeries(name, family)
    return CallMeter(breaker, name, resolved, series, paths)
