"""The apply core: signals coalesced per target in a ``Tally``, and the one ``apply`` of it.

The consumer's batches, the overflow ledger and the synchronous fallback all build a ``Tally``
and hand it to ``apply``: there is no second copy of the apply logic.

A ``Tally`` keeps, per target, only what the metrics need: the latest state (by sequence
number, so "latest state wins" whatever path a signal took), the number of transitions per
(old_state, new_state), whether a ``close()`` came first and, for a target with a ``fold`` hook
(a circuit that counts time in state), whatever that hook folds the signals into. Its size is
bounded by the number of targets (times 36 label sets), never by the number of signals.

What a target does with its record is its own business (``Target.write``): this module knows
nothing of gauges, counters or clocks.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Protocol

from fluxgate_stream._compat import kept

if TYPE_CHECKING:
    from collections.abc import Callable

    from fluxgate.signal import Signal
    from fluxgate.state import State

__all__ = ["APPLY_LOCK", "SEQUENCE", "Item", "Pending", "Tally", "Target", "apply"]

#: Serialises every write to the metrics. Process-wide because targets (a registry's circuits)
#: are shared by every pipeline that writes to them. Never held across an ``await``, and never
#: taken by a producer while a consumer runs. Kept across ``importlib.reload``, so code loaded
#: before and after a reload excludes each other.
APPLY_LOCK: threading.RLock = kept("apply.lock", threading.RLock)

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


#: What producers queue: (sequence number, target, signal), or a ``None`` signal for ``close()``.
#: Sequence numbers come from one process-wide counter, so they order every path.
Item = tuple[int, Target, "Signal | None"]


class Pending:
    """What a tally holds for one target.

    Attributes:
        close_seq: sequence number of a ``close()`` that came before everything below, or -1.
        state: the latest new state among the transitions, or ``None`` if there were none.
        state_seq: the sequence number of that transition.
        state_time: its ``timestamp``, as given.
        counts: the number of transitions per (old_state, new_state).
        folded: what the target's ``fold`` hook made of the transitions, or ``None``.
    """

    __slots__ = ("close_seq", "counts", "folded", "state", "state_seq", "state_time")

    def __init__(self) -> None:
        self.close_seq: int = -1
        self.state: State | None = None
        self.state_seq: int = -1
        self.state_time: object = None
        self.counts: dict[tuple[State, State], int] = {}
        self.folded: object = None


class Tally:
    """Signals coalesced per circuit. Not thread-safe: its owner serialises access.

    Items must be added in the order they were queued on their path (a batch sorts its items by
    sequence number first); a ``close()`` voids what was added for its circuit before it.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[Target, Pending] = {}

    def __bool__(self) -> bool:
        return bool(self.pending)

    def add(self, item: Item) -> None:
        """Fold one queued item in."""
        seq, circuit, signal = item
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
        if seq > pending.state_seq:
            pending.state = signal.new_state
            pending.state_seq = seq
            pending.state_time = signal.timestamp
        key = (signal.old_state, signal.new_state)
        pending.counts[key] = pending.counts.get(key, 0) + 1
        fold = circuit.fold
        if fold is not None:
            fold(pending, seq, signal)


#: Targets whose last write failed, with the number of failed writes since: a failure is logged
#: once, when its streak starts; the streak's length is logged when the target recovers. Only
#: failing targets are held. Guarded by APPLY_LOCK; kept across ``importlib.reload``.
_failing: dict[Target, int] = kept("apply.failing", dict[Target, int])


def apply(tally: Tally) -> int:
    """Write a tally to its targets; return how many targets failed.

    One target's failure (a user's sink raising, a metric write failing) never stops the others.
    A target's failure is logged once, with its circuit name and traceback, when a streak of
    failures starts; further failures of the same target are only counted (the return value,
    which the pipeline adds to ``statistics().apply_errors``) until a write succeeds, which logs a
    warning with the number of failed writes. A ``BaseException`` that is not an ``Exception``
    (``KeyboardInterrupt``, ``SystemExit``) raised by a target is neither logged nor counted: the
    other targets are written first, then it propagates.

    Raises:
        BaseException: the first non-``Exception`` a target raised, after every target was
            written.
    """
    failed = 0
    interrupt: BaseException | None = None
    with APPLY_LOCK:
        for target, pending in tally.pending.items():
            try:
                target.write(pending)
            except Exception:
                failed += 1
                streak = _failing.get(target, 0)
                _failing[target] = streak + 1
                if not streak:
                    _log.exception(
                        "applying signals for circuit %r failed; until a write succeeds, "
                        "further failures of this circuit are counted, not logged",
                        target.name,
                    )
            except BaseException as exc:  # KeyboardInterrupt, SystemExit: the others first
                if interrupt is None:
                    interrupt = exc
            else:
                if _failing and target in _failing:
                    _log.warning(
                        "applying signals for circuit %r works again; failed writes in a row: %d",
                        target.name,
                        _failing.pop(target),
                    )
    if interrupt is not None:
        raise interrupt
    return failed
