"""The apply core: signals coalesced per target in a ``Tally``, and the one ``apply`` of it.

The consumer's batches (overflow included) and the synchronous fallback all build a ``Tally``
and hand it to ``apply``: there is no second copy of the apply logic.

A ``Tally`` keeps, per target, only what the metrics need: the latest state (by sequence
number, so "latest state wins" whatever path a signal took), the number of transitions per
(old_state, new_state), whether a ``close()`` came first and, for a target with a ``fold`` hook
(a circuit that counts time in state), whatever that hook folds the signals into. Its size is
bounded by the number of targets (times 36 label sets), never by the number of signals.

What a target does with its record is its own business (``Target.write``): this module knows
nothing of gauges, counters or clocks.

Never re-entered mid-write: a thread that already holds ``APPLY_LOCK`` (a signal handler that
interrupted a write, or any other code that runs under the lock, and calls a listener) does not
apply there and then; it ``defer()``s, and the pipeline's apply paths run what was deferred, in
the order deferred, as their ``with APPLY_LOCK`` block ends (``run_deferred()``). Every other
holder (building a listener, a scrape of the time in state) takes the lock with ``holding()``,
which does the same as its block ends: a deferred call never waits for a later one.

Across ``os.fork()``: the forking thread takes ``APPLY_LOCK`` just before the fork and lets it go
just after, in the parent and in the child, so the child never inherits a write half-done by
another thread (its metrics are the parent's as applied at that moment) nor a lock that a thread
it does not have holds. What must be done to the metrics right after a fork, before any other
thread of the parent writes (multiprocess mode's state gauge: ``_circuits``), is registered with
``while_forked()`` and runs with the lock still held. What the parent deferred is the parent's:
the child forgets it, and the parent runs it once the lock is let go.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Generator
from contextlib import contextmanager
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Protocol, cast

from fluxgate.signal import Signal

from fluxgate_stream._compat import at_fork, kept, late_bound, owned

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from fluxgate.state import State

__all__ = [
    "APPLY_LOCK",
    "SEQUENCE",
    "Call",
    "CallQueue",
    "Counts",
    "Item",
    "Pending",
    "Tally",
    "Target",
    "apply",
    "defer",
    "holding",
    "run_deferred",
    "while_forked",
]

#: Serialises every write to the metrics. Process-wide because targets (a registry's circuits)
#: are shared by every pipeline that writes to them. Never held across an ``await``, and never
#: taken by a producer while a consumer runs. Kept across ``importlib.reload``, so code loaded
#: before and after a reload excludes each other.
APPLY_LOCK: threading.RLock = kept("apply.lock", threading.RLock)

#: What threads holding ``APPLY_LOCK`` deferred (``defer()``), oldest first: any thread appends
#: (only while it holds the lock), ``run_deferred()`` pops. Kept across ``importlib.reload``.
_DEFERRED: deque[Callable[[], object]] = kept("apply.deferred", deque[Callable[[], object]])


#: The threads inside ``run_deferred()`` now (set operations are atomic). Kept across reload.
_RUNNING: set[int] = kept("apply.running_deferred", set[int])


def defer(work: Callable[[], object]) -> bool:
    """Defer ``work`` if the calling thread holds ``APPLY_LOCK``; return whether it did.

    The caller then returns without applying: its holder may be in the middle of a write (the
    caller may be a signal handler that interrupted it), and a nested write would leave the metric
    half-written (a gauge with two states at 1). ``run_deferred()`` runs ``work`` later (see the
    module docstring). With ``False``, the caller goes on and takes the lock itself.
    """
    if owned(APPLY_LOCK):
        _DEFERRED.append(work)
        return True
    return False


def run_deferred() -> None:
    """Run what was deferred, in order; call it after leaving a ``with APPLY_LOCK`` block.

    Does nothing while the calling thread still holds the lock (an outer block will call it),
    nor inside a ``run_deferred()`` of the same thread (whose loop takes the rest: each piece of
    work is an apply path that ends by calling this, and nesting would recurse once per piece).
    Each piece of work takes the lock itself, and may defer again if it is interrupted.
    """
    me = threading.get_ident()
    if me in _RUNNING:
        return
    _RUNNING.add(me)
    try:
        while _DEFERRED and not owned(APPLY_LOCK):
            try:
                work = _DEFERRED.popleft()
            except IndexError:  # another thread ran the last one
                return
            work()
    finally:
        _RUNNING.discard(me)


@contextmanager
def holding() -> Generator[None]:
    """``with APPLY_LOCK``, for the holders that are not apply paths; then ``run_deferred()``.

    A signal handler that lands in the block and calls a listener has its call deferred; with
    no apply path around the block, nothing else would run it until some later listener call.
    """
    try:
        with APPLY_LOCK:
            yield
    finally:
        run_deferred()


#: What runs right after a fork, with ``APPLY_LOCK`` still held: per key, the calls for the
#: parent and for the child (``while_forked()``). Kept across ``importlib.reload``.
_Forked = dict[str, tuple[Callable[[], None], Callable[[], None]]]
_WHILE_FORKED: _Forked = kept("apply.while_forked", _Forked)


def while_forked(
    key: str, *, in_parent: Callable[[], object], in_child: Callable[[], object]
) -> None:
    """Run ``in_parent`` / ``in_child`` after every ``os.fork()``, before ``APPLY_LOCK`` is let go.

    Once per ``key``, however often the caller is reloaded; each must be a module-level function
    (the one of that name in its module when the fork happens runs) and must not raise: an
    ``Exception`` is logged, and the lock is let go whatever happened.
    """
    _WHILE_FORKED.setdefault(key, (late_bound(in_parent), late_bound(in_child)))


def _run_while_forked(side: int, where: str) -> None:
    # A fork hook never raises (os.fork would only print it, and the lock would stay taken).
    for key, calls in list(_WHILE_FORKED.items()):
        try:
            calls[side]()
        except Exception:  # a fork hook never raises: os.fork would only print it
            _log.exception("fluxgate-stream: %s failed after os.fork() %s", key, where)


def _before_fork() -> None:
    APPLY_LOCK.acquire()  # no write is half-done in the forking thread's copy of the process


def _after_fork_in_parent() -> None:
    try:
        _run_while_forked(0, "in the parent")
    finally:
        APPLY_LOCK.release()
    run_deferred()  # a signal handler's listener call during the fork


def _after_fork_in_child() -> None:  # pragma: no cover  # runs in forked children (their tests)
    _DEFERRED.clear()  # the parent's queued work: the parent does it
    _RUNNING.clear()  # threads the child has not (a new thread may get one's ident)
    try:
        _run_while_forked(1, "in the child")
    finally:
        APPLY_LOCK.release()  # the forking thread held it at the fork: in the child it still does


# Registered once (a reload finds the registration kept); each runs this module's current code.
at_fork(
    "apply.lock",
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)

#: Numbers every queued item and ``close()``, across every path and pipeline of the process, so
#: that "older" means the same thing everywhere. ``next()`` on it is atomic under the GIL. Kept
#: across ``importlib.reload``: restarting it would make every circuit that applied item n
#: before the reload ignore, as "older", the items numbered below n after it.
SEQUENCE: itertools.count[int] = kept("apply.sequence", itertools.count)

_log = logging.getLogger("fluxgate_stream")


class Target(Protocol):
    """Where a listener's signals end up: written on the consumer, with APPLY_LOCK held."""

    @property
    def name(self) -> str:
        """The circuit name, for logs."""
        ...

    @property
    def fold(self) -> Callable[[Pending, int, Signal], None] | None:
        """A per-signal hook, or ``None``: ``fold(pending, seq, signal)`` for every transition.

        Called as each signal is added to a tally, by whoever builds it (see ``Tally``); it may
        keep what it wants in ``pending.folded``. A target with a hook reads each signal's
        ``timestamp``, so listeners check timestamps at the call site for it.
        """
        ...

    @property
    def closed_seq(self) -> int:
        """Sequence number of the latest applied ``close()``; older signals are void."""
        ...

    def write(self, pending: Pending) -> None:
        """Apply what a tally holds for this target. Caller must hold APPLY_LOCK."""
        ...


#: A metered call's outcome, queued by ``fluxgate_stream.calls``: (kind, duration in seconds or
#: ``None``); also its series at 0 (metering starts), a trip (its reason, a ``str``) and a shadow
#: trip, each with a kind of its own.
Call = tuple["int | str", "float | None"]


class CallQueue(deque[Call]):
    """One meter's calls made on its pipeline's loop thread, queued there until written.

    ``fluxgate_stream.calls`` coalesces the calls of the consumer's own thread: a call appends
    its ``Call`` here and, only if the queue is not ``armed``, queues the queue itself as an
    item (a marker) and arms it; the target's ``write`` disarms it and takes every call it holds.
    So while calls keep coming, one item reaches the stream per batch, not one per call.

    Concurrency model: only the loop thread appends, while the consumer runs there (any other
    thread queues its calls one item each, and with no consumer calls apply directly); only the
    target's ``write``, under ``APPLY_LOCK``, pops. A producer arms *after* queueing the marker,
    and ``write`` disarms *before* taking: an exception between a producer's append and its
    marker (a signal handler's) leaves the queue unarmed, so the next call queues one, and so do
    ``flush()`` (for every unarmed queue that holds calls) and the consumer's stop (for every
    queue that holds calls). A marker is never voided (see ``Tally``): an armed queue's marker
    always reaches its ``write``. A tally keeps each queue once (by identity).

    Attributes:
        target: the calls' ``Target`` (the meter's series).
        armed: a marker for this queue is queued and not yet written.
        closed: the meter was closed: ``write`` empties the queue, counting nothing more of it
            (in multiprocess mode, where ``close()`` keeps the series, it counts what is left).
        born: a sequence number drawn as the queue was made: every call it holds is newer, so
            a ``close()`` older than that (the name's meter closed, and a new one made since)
            drops none of them.
    """

    __slots__ = ("armed", "born", "closed", "target")

    # One queue is one meter's: equal only to itself, and hashable (PipelineState keeps a set of
    # them), unlike a deque, which compares its items.
    def __hash__(self) -> int:  # pyright: ignore[reportIncompatibleVariableOverride]  # deque declares no hash
        return object.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target: Target = target
        self.armed: bool = False
        self.born: int = next(SEQUENCE)
        self.closed: bool = False


#: What producers queue: (sequence number, target, payload): a transition's signal, a ``None``
#: for ``close()``, a ``Call`` (a plain tuple, which no ``Signal`` is) or a ``CallQueue`` (the
#: calls it holds when its target writes). Sequence numbers come from one process-wide counter,
#: so they order every path.
Item = tuple[int, Target, "Signal | Call | CallQueue | None"]


class Pending:
    """What a tally holds for one target.

    Attributes:
        close_seq: sequence number of a ``close()`` that came before everything below, or -1.
        state: the latest new state among the transitions, or ``None`` if there were none.
        state_seq: the sequence number of that transition.
        state_time: its ``timestamp``, as given.
        counts: the number of transitions per (old_state, new_state).
        folded: what the target's ``fold`` hook made of the transitions, or ``None``; for a
            target of calls (``fluxgate_stream.calls``), the list of its ``Call`` payloads, in
            order (a batch's, and what the batch's ``CallQueue`` markers held), which its
            ``write`` folds.
        queues: the ``CallQueue`` markers added, or ``None``: their calls, taken by ``write``.
        interrupted: a ``BaseException`` ended a write of this record once (see ``apply``).
    """

    __slots__ = (
        "close_seq",
        "counts",
        "folded",
        "interrupted",
        "queues",
        "state",
        "state_seq",
        "state_time",
    )

    def __init__(self) -> None:
        self.close_seq: int = -1
        self.state: State | None = None
        self.state_seq: int = -1
        self.state_time: object = None
        self.counts: dict[tuple[State, State], int] = {}
        self.folded: object = None
        self.queues: list[CallQueue] | None = None
        self.interrupted: bool = False


#: ``Tally.add_all``'s C-level accessors: an item's target and payload, a signal's states.
_TARGET: Callable[[Item], Target] = itemgetter(1)
_PAYLOAD: Callable[[Item], object] = itemgetter(2)
_OLD_STATE: Callable[[Signal], State] = attrgetter("old_state")
_NEW_STATE: Callable[[Signal], State] = attrgetter("new_state")


class Tally:
    """Signals coalesced per circuit. Not thread-safe: its owner serialises access.

    Items are added in sequence order: a consumer's batch is sorted first, as ``add_all`` needs.
    ``add`` itself sets the state from the newest item by sequence number wherever it comes,
    but a ``close()`` voids what was added for its circuit before it, so the order decides what
    it voids. A
    ``Call`` payload is only kept, in ``Pending.folded``, and a ``CallQueue`` in
    ``Pending.queues``, whatever ``close()`` came before or after it (its target's ``write``
    disarms every queue and takes its calls before it applies the close).
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[Target, Pending] = {}

    def __bool__(self) -> bool:
        return bool(self.pending)

    def add(self, item: Item) -> None:
        """Fold one queued item in."""
        seq, circuit, signal = item
        if isinstance(signal, deque):  # a meter's CallQueue (a class across importlib.reload)
            self._keep_queue(circuit, signal)
            return
        pending = self.pending.get(circuit)
        if pending is None:
            if seq < circuit.closed_seq:
                return  # older than an applied close(): its series are already gone
            pending = self.pending[circuit] = Pending()
        elif seq < pending.close_seq:
            return  # older than a close() in this tally
        if signal is None:
            if seq > pending.close_seq:
                pending.close_seq = seq
                pending.state = None
                pending.state_seq = -1
                pending.counts.clear()
                pending.folded = None
            return
        if type(signal) is tuple:  # a metered call (fluxgate_stream.calls): never a transition
            calls = pending.folded
            if calls is None:
                pending.folded = [signal]
            else:
                cast("list[Call]", calls).append(signal)
            return
        # Not a tuple, so a Signal (which is no tuple); pyright cannot narrow by type().
        transition: Signal = signal  # pyright: ignore[reportAssignmentType]  # see above
        if seq > pending.state_seq:
            pending.state = transition.new_state
            pending.state_seq = seq
            pending.state_time = transition.timestamp
        key = (transition.old_state, transition.new_state)
        pending.counts[key] = pending.counts.get(key, 0) + 1
        fold = circuit.fold
        if fold is not None:
            fold(pending, seq, transition)

    def add_all(self, items: Sequence[Item]) -> None:
        """Fold ``items``, in sequence order, in: what ``add`` does for each, in order.

        The order is the caller's to keep (a consumer's batch is sorted: ``PipelineState``); the
        bulk fold below relies on it, where ``add`` takes the newest state whatever the order. A
        consumer's batch is most often transitions only, to targets without a ``fold`` hook and
        not ``close()``d since: into a tally that holds nothing yet, such a batch is folded in a
        few passes over it that run in C (``_fold_transitions``), at about two thirds of the cost
        per item of ``add`` (192 against 277 ns, 65,536 items over 100 circuits; see
        docs/performance.md). Any other batch is added item by item: splitting it by target, so
        as to fold the rest in bulk, cost as much as the bulk fold saves, even with C-level
        passes (285 against 286 ns per item, one ``close()`` among 65,536 transitions).
        """
        if self.pending or not items or not self._fold_transitions(items):
            add = self.add
            for item in items:
                add(item)

    def _fold_transitions(self, items: Sequence[Item]) -> bool:
        """Fold ``items`` as ``add`` would, if they allow it (see ``add_all``); return whether.

        What ``add`` does for such items: the one of a target's with the highest sequence number
        sets its state, and each (old_state, new_state) is counted; no ``close()``, so nothing is
        voided, and no item is older than its target's applied ``close()``. Records and their
        counts are made in the order ``add`` makes them (each key where it first appears).

        In sequence order, the last of a target's items is its newest and the first item the
        oldest: checking the order here would cost a sixth of the fold (31 ns per item), where
        the consumer's sort of a batch in order costs 13-16 (a pass of comparisons; about 20
        once the numbers pass 2**30).
        """
        targets: list[Target] = list(map(_TARGET, items))
        signals = list(map(_PAYLOAD, items))
        if set(map(type, signals)) != {Signal}:  # a close() (None), a metered call or a marker
            return False
        oldest = items[0][0]
        for target in set(targets):
            if target.fold is not None or target.closed_seq > oldest:
                return False
        pending = self.pending
        last = dict(zip(targets, items, strict=True))  # per target, its last item: the newest
        for target, (seq, _, payload) in last.items():
            signal = cast("Signal", payload)  # checked above
            record = pending[target] = Pending()
            record.state = signal.new_state
            record.state_seq = seq
            record.state_time = signal.timestamp
        transitions = cast("list[Signal]", signals)  # checked above
        keys = zip(targets, map(_OLD_STATE, transitions), map(_NEW_STATE, transitions), strict=True)
        counted = Counter(cast("Iterator[tuple[Target, State, State]]", keys))
        for (target, old, new), count in counted.items():
            pending[target].counts[old, new] = count
        return True

    def _keep_queue(self, circuit: Target, queue: CallQueue) -> None:
        """Keep a meter's queue for its target's write, whatever ``close()`` came before or after.

        Its calls may be later than that close (the queue is the meter's, not the marker's), and
        the write must disarm it in any case, or its later calls would wait for a marker that
        never comes.
        """
        pending = self.pending.get(circuit)
        if pending is None:
            pending = self.pending[circuit] = Pending()
        queues = pending.queues
        if queues is None:
            pending.queues = [queue]
        elif queue not in queues:
            queues.append(queue)


#: Targets whose last write failed, with the number of failed writes since: a failure is logged
#: once, when its streak starts; the streak's length is logged when the target recovers. Only
#: failing targets are held. Guarded by APPLY_LOCK; kept across ``importlib.reload``.
_failing: dict[Target, int] = kept("apply.failing", dict[Target, int])


class Counts(Protocol):
    """Where ``apply`` counts failed writes: a pipeline's ``apply_errors``."""

    apply_errors: int


def apply(tally: Tally, counts: Counts | None = None) -> int:
    """Write a tally to its targets, taking each out as it is written; return how many failed.

    One target's failure (a user's sink raising, a metric write failing) never stops the others.
    A target's failure is counted, also in ``counts.apply_errors`` as it happens (so that it
    stays counted if a ``BaseException`` follows), and logged once, with its circuit name
    and traceback, when a streak of failures starts; further failures of the same target are
    only counted until a write succeeds, which logs a warning with the number of failed writes.
    A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``) raised
    by a target is neither logged nor counted: the other targets are written first, then it
    propagates.

    A target leaves ``tally.pending`` as its write ends, so an exception that arrives between two
    writes (a signal handler's ``SystemExit``) leaves in the tally exactly the targets not written
    yet: apply it again to finish, and nothing is written twice. One arriving inside a target's
    write ends that write where it is; a target whose ``resumable`` attribute is true (a
    ``Circuit``, whose write takes each part out of ``pending`` once written) stays in the tally
    for one more try, which writes the rest; any other leaves it, the rest of its record lost
    (a user's sink is never handed the same transitions twice).

    Raises:
        BaseException: the first non-``Exception`` a target raised, after every target was
            written.
    """
    failed = 0
    interrupt: BaseException | None = None
    pending_by_target = tally.pending
    with APPLY_LOCK:
        for target in list(pending_by_target):  # a target kept for a second try is not retried here
            pending = pending_by_target[target]
            try:
                target.write(pending)
            except Exception:
                del pending_by_target[target]
                failed += 1
                if counts is not None:
                    counts.apply_errors += 1
                streak = _failing.get(target, 0)
                _failing[target] = streak + 1
                if not streak:
                    _log.exception(
                        "applying signals for circuit %r failed; until a write succeeds, "
                        "further failures of this circuit are counted, not logged",
                        target.name,
                    )
            except BaseException as exc:  # KeyboardInterrupt, SystemExit: the others first
                if pending.interrupted or not getattr(target, "resumable", False):
                    del pending_by_target[target]
                else:
                    # A resumable write (a Circuit's) took out of pending what it wrote: the
                    # next apply of this tally (the consumer's stop) writes the rest, once.
                    pending.interrupted = True
                if interrupt is None:
                    interrupt = exc
            else:
                del pending_by_target[target]
                if _failing and target in _failing:
                    _log.warning(
                        "applying signals for circuit %r works again; failed writes in a row: %d",
                        target.name,
                        _failing.pop(target),
                    )
    if interrupt is not None:
        raise interrupt
    return failed
