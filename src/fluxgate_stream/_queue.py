"""The state a pipeline's producers and its consumer share, and the producers' side of it.

As in anyio's memory object streams (one ``MemoryObjectStreamState`` shared by both ends), the
two ends of a pipeline, its listeners (producers) and its consumer (``SignalPipeline.run``),
share one ``PipelineState`` whose fields are public, so neither end reaches into the other's
private attributes: a listener looks its pipeline's state up once, when it is created
(``PipelineState.of``), and its inlined fast path reads the fields directly.

This module holds what producers do (``submit``, the overflow ledger, the direct apply, waking
the consumer) and the pieces of draining that both ends use; the consumer's loop, its batch
window and ``flush()`` are in ``fluxgate_stream.pipeline``. The concurrency model is stated on
``PipelineState``.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from contextlib import suppress
from itertools import repeat
from typing import TYPE_CHECKING, Final

import anyio
from anyio import WouldBlock

from fluxgate_stream._apply import APPLY_LOCK, SEQUENCE, Item, Tally, apply
from fluxgate_stream._compat import call_soon, kept, ki_protected

if TYPE_CHECKING:
    import itertools
    from collections.abc import Callable

    from anyio.lowlevel import EventLoopToken
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from fluxgate.signal import Signal

    from fluxgate_stream._apply import Target

__all__ = ["WAKE", "PipelineState", "Wake"]

#: The process-wide sequence numbers (``_apply.SEQUENCE``), under the name the hot paths use.
_SEQ: itertools.count[int] = SEQUENCE
_get_ident = threading.get_ident


class Wake:
    """The item a thread's wake-up sends to a sleeping consumer; it carries nothing."""

    __slots__ = ()


WAKE: Final = Wake()


class PipelineState:
    """What one pipeline's producers and consumer share.

    Concurrency model
    -----------------
    * The *loop thread* is the thread whose event loop runs the consumer (``loop_thread``, its
      id, while it runs; ``None`` otherwise). Only it touches the anyio stream (``send``,
      ``receive``; anyio's memory streams are not thread-safe): producers on it ``send_nowait``,
      the consumer receives, and thread wake-ups are delivered onto it with ``run_sync_soon``.
    * Other threads append to ``bridge``, a ``collections.deque`` (``append``/``popleft`` are
      atomic). A thread wakes the consumer only if it is ``sleeping``, by scheduling a callback on
      the loop thread (``token``); it never waits for the loop.
    * When the stream or the bridge is full, producers fold their item into ``ledger``, a
      ``Tally`` bounded by the number of circuits and guarded by ``lock``, and keep doing so
      until the consumer has taken the ledger (``overflowing`` is "sticky"): newer signals then
      never overtake older ones still queued. ``lock`` guards ``ledger`` and ``overflowing``;
      only a ``Tally.add`` runs under it.
    * With no consumer running, producers apply directly (the fallback), under ``APPLY_LOCK``.
    * ``loop_thread`` (and ``token``, ``send``, ``receive``) are written only with
      ``APPLY_LOCK`` held (start and stop of the consumer), so a fallback or orphan drain, which
      holds it too, never interleaves with a consumer starting or stopping.
    * Every queued item carries a process-wide sequence number: the gauge shows the latest one
      applied, whichever path each took; counters are plain sums, so order does not matter to
      them. The loop thread numbers and sends its items one at a time, so the stream holds them
      in sequence order; a batch sorts only to merge bridge items in.

    Each statistics counter has one writer context, noted by its field, so none needs a lock of
    its own.
    """

    __slots__ = (
        "__weakref__",
        "apply_errors",
        "batches",
        "bridge",
        "bridge_append",
        "ledger",
        "ledgers_taken",
        "lock",
        "loop_thread",
        "max_buffer_size",
        "overflowing",
        "receive",
        "send",
        "send_nowait",
        "signals_applied_directly",
        "signals_from_bridge",
        "signals_from_stream",
        "signals_overflowed",
        "sleeping",
        "taken_from_bridge",
        "taken_from_stream",
        "token",
        "wakeups",
    )

    def __init__(self, owner: object, max_buffer_size: int) -> None:
        self.max_buffer_size: Final = max_buffer_size
        # Each consumer run gets a fresh stream and closes it when it ends; until then, a closed
        # one. Loop thread only.
        self.send: MemoryObjectSendStream[Item | Wake]
        self.receive: MemoryObjectReceiveStream[Item | Wake]
        self.send_nowait: Callable[[Item | Wake], None]
        self.open_stream()
        self.close_stream()
        self.bridge: Final[deque[Item]] = deque()  # any thread appends; the consumer pops
        self.bridge_append: Final = self.bridge.append
        self.lock: Final = threading.Lock()  # guards ledger and overflowing
        self.ledger: Tally = Tally()
        self.overflowing: bool = False
        self.loop_thread: int | None = None  # the consumer's thread id while it runs
        self.token: EventLoopToken | None = None  # the consumer's event loop while it runs
        self.sleeping: bool = False  # the consumer awaits the stream: wake it for bridge items
        # The consumer's progress, which flush() waits on (loop thread; under APPLY_LOCK when
        # stopped).
        self.taken_from_stream: int = 0
        self.taken_from_bridge: int = 0
        self.ledgers_taken: int = 0
        # Statistics.
        self.signals_from_stream: int = 0  # loop thread (consumer)
        self.signals_from_bridge: int = 0  # loop thread (consumer), or under APPLY_LOCK stopped
        self.signals_overflowed: int = 0  # under lock
        self.signals_applied_directly: int = 0  # under APPLY_LOCK
        self.wakeups: int = 0  # loop thread
        self.batches: int = 0  # under APPLY_LOCK
        self.apply_errors: int = 0  # under APPLY_LOCK
        _STATES[owner] = self

    @staticmethod
    def of(owner: object) -> PipelineState:
        """The state of pipeline ``owner``, which created it."""
        return _STATES[owner]

    # -- the stream (loop thread, with APPLY_LOCK held) --------------------------------------------

    def open_stream(self) -> None:
        """Give the consumer a fresh stream. Caller holds APPLY_LOCK, on the loop thread."""
        self.send, self.receive = anyio.create_memory_object_stream[Item | Wake](
            self.max_buffer_size
        )
        self.send_nowait = self.send.send_nowait

    def close_stream(self) -> None:
        """Close the stream: what is still sent to it raises. Caller holds APPLY_LOCK."""
        self.send.close()
        self.receive.close()

    def queued(self) -> int:
        """Items in the stream and the bridge now."""
        return self.send.statistics().current_buffer_used + len(self.bridge)

    # -- producers (any thread) ------------------------------------------------------------------

    def submit(self, target: Target, signal: Signal | None) -> None:
        """Queue a transition (or, with ``signal=None``, a ``close()``) for ``target``.

        Never blocks on the event loop and never raises for a full buffer. Any thread. This is
        the producers' hot path, written for speed (bound methods, no helper calls on the common
        branches). ``QueueingListener.__call__`` inlines the first branch.
        """
        loop_thread = self.loop_thread
        if loop_thread == _get_ident():
            # On the loop thread the consumer cannot start, stop or run under us.
            item: Item = (next(_SEQ), target, signal)
            if not self.overflowing:
                try:
                    self.send_nowait(item)
                except WouldBlock:
                    self.overflow(item)
            else:
                self.overflow(item)
        elif loop_thread is None:
            self.apply_now((next(_SEQ), target, signal))
        else:
            item = (next(_SEQ), target, signal)
            if self.overflowing or len(self.bridge) >= self.max_buffer_size:
                self.overflow(item)
            else:
                self.bridge_append(item)
            # The consumer sets sleeping *before* its last look at the bridge and the ledger,
            # and we read it *after* queueing: either it sees our item or we see it asleep.
            if self.sleeping:
                self.sleeping = False  # one wake-up per sleep, not one per signal
                self.wake()
            if self.loop_thread is None:
                # The consumer stopped between our look at it and our append: nobody else will
                # take what we left, so apply it now.
                self.drain_orphans()

    def overflow(self, item: Item) -> None:
        """Fold ``item`` into the overflow ledger. Any thread."""
        with self.lock:
            self.ledger.add(item)
            self.overflowing = True
            self.signals_overflowed += 1

    @ki_protected
    def apply_now(self, item: Item) -> None:
        """Apply ``item`` in the caller: the fallback, while no consumer runs. Any thread."""
        tally = Tally()
        tally.add(item)
        with APPLY_LOCK:
            self.signals_applied_directly += 1
            self.apply(tally)

    def apply(self, tally: Tally) -> None:
        """The one way this pipeline writes metrics. Caller must hold APPLY_LOCK."""
        self.batches += 1
        self.apply_errors += apply(tally)

    def wake(self) -> None:
        """Schedule a wake-up of the consumer on its loop thread, without waiting. Any thread."""
        token = self.token
        if token is None:
            return
        # A loop that has finished cannot be woken; the caller's orphan check covers that case.
        with suppress(anyio.RunFinishedError, RuntimeError):
            call_soon(token, self.wake_on_loop)

    def wake_on_loop(self) -> None:
        """Wake the consumer. Runs on the thread of the loop the wake-up was scheduled on."""
        # The consumer may have stopped (or another started elsewhere) since: then the stream
        # is not ours to touch.
        if self.loop_thread == _get_ident():
            # A full stream means the consumer has work anyway; a closed one, that it has stopped.
            with suppress(WouldBlock, anyio.ClosedResourceError):
                self.send.send_nowait(WAKE)
                self.wakeups += 1

    @ki_protected
    def drain_orphans(self) -> None:
        """Apply what a thread left in the bridge or ledger after the consumer stopped.

        Any thread.
        """
        with APPLY_LOCK:
            if self.loop_thread is not None:
                return  # a consumer (re)started: the queues are its own again
            self.apply_queued(self.take_bridge(None), self.take_ledger())

    # -- draining (the consumer; with no consumer, under APPLY_LOCK) -------------------------------

    def take_stream(self, into: list[Item], limit: int) -> bool:
        """Receive up to ``limit`` items; return whether the stream ran empty. Loop thread only."""
        receive_nowait = self.receive.receive_nowait
        append = into.append
        before = len(into)
        wakes = 0
        empty = False
        try:  # the drain's per-item loop: kept to a call, a class check and an append
            for _ in repeat(None, limit):
                item = receive_nowait()
                if isinstance(item, tuple):  # an Item; a Wake (from any copy of us) is not
                    append(item)
                else:
                    wakes += 1
        except WouldBlock:
            empty = True
        signals = len(into) - before
        self.taken_from_stream += signals + wakes
        self.signals_from_stream += signals
        return empty

    def take_bridge(self, limit: int | None) -> list[Item]:
        """Take up to ``limit`` items (``None``: all) from the bridge, oldest first."""
        popleft = self.bridge.popleft
        items: list[Item] = []
        with suppress(IndexError):
            while limit is None or len(items) < limit:
                items.append(popleft())
        self.taken_from_bridge += len(items)
        self.signals_from_bridge += len(items)
        return items

    def take_ledger(self) -> Tally | None:
        """Take the overflow ledger, if there is one, ending the sticky overflow."""
        with self.lock:
            if not self.overflowing:
                return None
            ledger, self.ledger = self.ledger, Tally()
            self.overflowing = False
        self.ledgers_taken += 1
        return ledger

    def apply_queued(self, items: list[Item], ledger: Tally | None, *, merge: bool = True) -> None:
        """Apply ``items``, then ``ledger``; ``merge=False`` only for items already in order."""
        with APPLY_LOCK:
            if items:
                if merge:
                    items.sort()  # by sequence number: each path is in order, so this merges
                tally = Tally()
                for item in items:
                    tally.add(item)
                self.apply(tally)
            if ledger is not None:
                self.apply(ledger)


#: Each pipeline's state, by pipeline, for the listeners created with it. Weak keys: a pipeline
#: nobody uses goes with its state. Kept across ``importlib.reload``, so that a pipeline made
#: before a reload is found after it.
_STATES: weakref.WeakKeyDictionary[object, PipelineState] = kept(
    "queue.states", weakref.WeakKeyDictionary[object, PipelineState]
)
