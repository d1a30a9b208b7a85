"""The state a pipeline's producers and its consumer share, and the producers' side of it.

As in anyio's memory object streams (one ``MemoryObjectStreamState`` shared by both ends), the
two ends of a pipeline, its listeners (producers) and its consumer (``SignalPipeline.run``),
share one ``PipelineState`` whose fields are public, so neither end reaches into the other's
private attributes: a listener looks its pipeline's state up once, when it is created
(``PipelineState.of``), and its inlined fast path reads the fields directly.

This module holds what producers do (``submit``, the overflow queue, the direct apply, waking
the consumer) and the pieces of draining that both ends use; the consumer's loop, its batch
window and ``flush()`` are in ``fluxgate_stream.pipeline``. The concurrency model is stated on
``PipelineState``.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from contextlib import suppress
from functools import partial
from itertools import repeat, starmap
from time import monotonic
from typing import TYPE_CHECKING, Final, cast

import anyio
from anyio import WouldBlock

from fluxgate_stream._apply import (
    APPLY_LOCK,
    SEQUENCE,
    CallQueue,
    Item,
    Tally,
    apply,
    defer,
    run_deferred,
)
from fluxgate_stream._circuits import Circuit
from fluxgate_stream._compat import (
    call_soon,
    kept,
    ki_protected,
    owned,
    stream_buffer,
    stream_receivers,
)

if TYPE_CHECKING:
    import itertools
    from collections.abc import Callable, Sized

    from anyio.lowlevel import EventLoopToken
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from fluxgate.signal import Signal

    from fluxgate_stream._apply import Call, Target

__all__ = ["WAKE", "PipelineState", "Wake", "states"]

#: The process-wide sequence numbers (``_apply.SEQUENCE``), under the name the hot paths use.
_SEQ: itertools.count[int] = SEQUENCE
_get_ident = threading.get_ident


class Wake:
    """The item a thread's wake-up sends to a sleeping consumer; it carries nothing."""

    __slots__ = ()


#: The one wake-up item of the process: ``apply_taken`` drops it by identity, so a reload of this
#: module must not make another while one may be queued.
WAKE: Final = kept("queue.wake", Wake)


class PipelineState:
    """What one pipeline's producers and consumer share.

    Concurrency model
    -----------------
    * The *loop thread* is the thread whose event loop runs the consumer (``loop_thread``, its
      id, while it runs; ``None`` otherwise). Only it touches the anyio stream (``send``,
      ``receive``; anyio's memory streams are not thread-safe): producers on it send (while no
      receiver waits and the buffer has room, by appending to ``buffer``: what ``send_nowait``
      would do; see ``send_on_loop``), the consumer receives, and thread wake-ups are delivered
      onto it with ``run_sync_soon``. The stream is open whenever ``loop_thread`` is set.
    * Other threads append to ``bridge``, a ``collections.deque`` (``append``/``popleft`` are
      atomic). A thread wakes the consumer only if it is ``sleeping``, by scheduling a callback on
      the loop thread (``token``); it never waits for the loop.
    * When the stream or the bridge is full, producers append their item to ``spill``, the
      overflow queue (another deque), and set ``overflowing``; while it is set ("sticky"), every
      producer appends there, until the consumer has taken the overflow queue's last item: newer
      signals then never overtake older ones still queued. The consumer takes it only once the
      stream and the bridge ran dry, and folds it with them. **No producer takes any lock, nor
      runs any Python code but its own call, while a consumer runs**: a signal handler that calls
      a listener while the code it interrupted is in a listener call (or in the consumer) cannot
      deadlock. A producer sets ``overflowing`` *after* its append, so an item appended after the
      consumer ended the overflow is followed by the flag set again, and taken at the next one.
    * What bounds memory: the stream and the bridge hold at most ``max_buffer_size`` items each; the
      overflow queue holds one item (a tuple and the breaker's ``Signal``) per signal until the
      consumer's next batch takes it (``MAX_BATCH`` items or half of it, whichever is more, up to
      ``MAX_SPILL_BATCH``), so below ``2 * MAX_SPILL_BATCH`` items it stays near twice what
      arrives between two of the consumer's batches, where a fixed cap of ``MAX_BATCH`` let it
      grow for as long as producer threads queued more than that between two batches. It grows
      for good while the consumer does not get the loop (a loop blocked by a long synchronous
      call while other threads keep transitioning breakers), or for as long as more than
      ``MAX_SPILL_BATCH`` items arrive between two batches. A meter's ``CallQueue`` likewise holds
      one pair per call made on the loop thread since the consumer last ran (the loop thread makes
      them, so only while it does not yield).
    * A *lone* transition, one that finds the consumer asleep (``sleeping``) with its queues
      empty and nothing applied for ``quiet_span`` seconds (``quiet_at`` has passed), is applied
      by its caller, as with no consumer (``apply_lone``): that costs less than waking the
      consumer, which on a quiet breaker would be one wake-up and one batch per transition.
      The caller only *tries* ``APPLY_LOCK``, and writes only if none of the prometheus_client
      locks the write takes is held (``Circuit.unlocked``); otherwise (someone is writing or
      scraping, or the caller is a signal handler that interrupted them) it queues the item as
      usual. So no producer waits on a lock held for Python work; the one wait left is on a
      scraping thread that takes one of those locks between that check and the write, for as
      long as the scrape holds it (one value's read; a metric's dict copy, when the write looks
      its children up). It then moves ``quiet_at`` on, so that
      a burst's next signals are queued and batched. A consumer woken meanwhile waits for that
      write at ``APPLY_LOCK``, as for a scrape. Off with ``lone=False``.
    * With no consumer running, producers apply directly (the fallback), under ``APPLY_LOCK``. A
      thread that already holds ``APPLY_LOCK`` (a signal handler interrupting a write, the
      consumer's stop, a scrape) defers instead (``_apply.defer``), so a write is never
      re-entered: the apply paths, and the other holders (``_apply.holding()``), run what was
      deferred as their ``with`` block ends.
    * ``loop_thread`` (and ``token``, ``send``, ``receive``) are written only with
      ``APPLY_LOCK`` held (start and stop of the consumer), so a fallback or orphan drain, which
      holds it too, never interleaves with a consumer starting or stopping.
    * What the consumer took off the queues stays reachable from here until it is written:
      ``taken`` (the items of the batch being folded) and ``batch`` (the tally being applied,
      which ``_apply.apply`` empties target by target). Items leave the queues in one C-level
      step each (``list.extend`` over ``deque.popleft``), so an exception raised between two
      bytecodes (a signal handler's ``SystemExit``) finds every item in exactly one of: its
      queue, ``taken``, ``batch``, or written; the consumer's stop applies ``taken`` and
      ``batch``. Consumer-owned: the loop thread, or anyone under ``APPLY_LOCK`` while stopped.
    * Every queued item carries a process-wide sequence number: the gauge shows the latest one
      applied, whichever path each took; counters are plain sums, so order does not matter to
      them. The loop thread numbers and sends its items one at a time, so the stream holds them
      in sequence order, but for a signal handler's call, which can come between the number
      and the send of the call it interrupted and so precede it: the two calls overlap in time,
      and either order is theirs. It matters only to a ``close()`` so interrupted by a
      transition of its circuit: taken in one batch, which is sorted, the newer transition
      brings the series back; applied before the close (the handler's call lone, or with no
      consumer) or taken in an earlier batch, it is dropped by it. A batch sorts its items by
      sequence number, whichever paths they came by, so that within a batch the state shown is
      always the newest item's (``Tally.add_all`` relies on the order).
    * After ``os.fork()``, the child forgets the parent's consumer and everything queued
      (``forget_parent``): its metrics are the parent's as applied at the fork, the parent
      applies its own queue, and the child's calls apply directly until it starts a consumer.

    Each statistics counter has one writer context, noted by its field, so none needs a lock of
    its own.
    """

    __slots__ = (
        "__weakref__",
        "apply_errors",
        "batch",
        "batches",
        "bridge",
        "bridge_append",
        "buffer",
        "buffer_append",
        "call_queues",
        "lone",
        "loop_thread",
        "max_buffer_size",
        "overflowing",
        "quiet_at",
        "quiet_span",
        "receive",
        "receivers",
        "send",
        "send_nowait",
        "signals_applied_directly",
        "signals_from_bridge",
        "signals_from_stream",
        "signals_overflowed",
        "sleeping",
        "spill",
        "spill_append",
        "taken",
        "taken_from_bridge",
        "taken_from_spill",
        "taken_from_stream",
        "token",
        "wakeups",
    )

    def __init__(
        self, owner: object, max_buffer_size: int, *, quiet_span: float, lone: bool
    ) -> None:
        self.max_buffer_size: Final = max_buffer_size
        # Lone signals (see the class docstring): whether their callers apply them, and after how
        # long without an apply a signal counts as lone.
        self.lone: Final = lone
        self.quiet_span: Final = quiet_span
        # monotonic() time until which a signal is not lone: the consumer sets it as it goes to
        # sleep, a lone apply as it applies. Any thread writes it; a stale read only moves one
        # signal from one correct path to the other.
        self.quiet_at: float = float("-inf")
        # Each consumer run gets a fresh stream and closes it when it ends; until then, a closed
        # one. Loop thread only.
        self.send: MemoryObjectSendStream[Item | Wake]
        self.receive: MemoryObjectReceiveStream[Item | Wake]
        self.send_nowait: Callable[[Item | Wake], None]
        self.buffer: deque[Item | Wake]  # the stream's buffer (``stream_buffer``)
        self.buffer_append: Callable[[Item], None]  # its append: see send_on_loop
        self.receivers: Sized  # the stream's waiting receivers (``stream_receivers``)
        self.open_stream()
        self.close_stream()
        self.bridge: Final[deque[Item]] = deque()  # any thread appends; the consumer pops
        self.bridge_append: Final = self.bridge.append
        self.spill: Final[deque[Item]] = deque()  # the overflow queue: likewise
        self.spill_append: Final = self.spill.append
        self.overflowing: bool = False  # producers set it, the consumer clears it
        self.loop_thread: int | None = None  # the consumer's thread id while it runs
        self.token: EventLoopToken | None = None  # the consumer's event loop while it runs
        self.sleeping: bool = False  # the consumer awaits the stream: wake it for bridge items
        # The CallQueue of every meter on this pipeline (calls made on the loop thread), by weak
        # reference: CallMeter adds its queue and its close() discards it; flush() and the stop
        # mark those left unmarked, a fork empties them. A set of references, not a WeakSet:
        # copying it (list(), in C) runs no Python code that another thread could interleave.
        self.call_queues: Final[set[weakref.ref[CallQueue]]] = set()
        # Taken off the queues, not yet written (consumer-owned; see the class docstring).
        self.taken: Final[list[Item | Wake]] = []
        self.batch: Tally = Tally()
        # The consumer's progress, which flush() waits on (loop thread; under APPLY_LOCK when
        # stopped).
        self.taken_from_stream: int = 0
        self.taken_from_bridge: int = 0
        self.taken_from_spill: int = 0
        # Statistics.
        self.signals_from_stream: int = 0  # loop thread (consumer)
        self.signals_from_bridge: int = 0  # loop thread (consumer), or under APPLY_LOCK stopped
        self.signals_overflowed: int = 0  # likewise, as taken: see overflowed()
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
        self.buffer = stream_buffer(self.receive)
        self.buffer_append = self.buffer.append
        self.receivers = stream_receivers(self.receive)

    def close_stream(self) -> None:
        """Close the stream: what is still sent to it raises. Caller holds APPLY_LOCK."""
        self.send.close()
        self.receive.close()

    def queued(self) -> int:
        """Items in the stream and the bridge now (the overflow queue's count as overflowed)."""
        return len(self.buffer) + len(self.bridge)

    def overflowed(self) -> int:
        """Signals that went to the overflow queue so far: taken off it, and still on it."""
        return self.signals_overflowed + len(self.spill)

    # -- producers (any thread) ------------------------------------------------------------------

    def submit(self, target: Target, signal: Signal | Call | CallQueue | None) -> None:
        """Queue a transition, a metered call or (with ``signal=None``) a ``close()``.

        Never blocks on the event loop and never raises for a full buffer. Any thread. This is
        the producers' hot path, written for speed (bound methods, no helper calls on the common
        branches). ``QueueingListener.__call__`` inlines the common case of the first branch and
        of the last (another thread's signal, the consumer awake, the bridge not full).
        """
        loop_thread = self.loop_thread
        if loop_thread == _get_ident():
            # On the loop thread the consumer cannot start, stop or run under us.
            item: Item = (next(_SEQ), target, signal)
            if self.sleeping:
                self.lone_on_loop(item)
            else:
                self.send_on_loop(item)
        elif loop_thread is None:
            self.apply_now((next(_SEQ), target, signal))
        else:
            item = (next(_SEQ), target, signal)
            if self.sleeping and not self.bridge and not self.overflowing and self.apply_lone(item):
                return
            if self.overflowing or len(self.bridge) >= self.max_buffer_size:
                self.overflow(item)
            else:
                self.bridge_append(item)
            self.queued_off_loop()

    def queued_off_loop(self) -> None:
        """Wake or stand in for the consumer after queueing an item off the loop thread.

        ``QueueingListener.__call__`` inlines the common case: it calls this only when it sees
        the consumer asleep or stopped after its append (this looks again).
        """
        # The consumer sets sleeping *before* its last look at the queues, and we read it
        # *after* queueing: either it sees our item or we see it asleep.
        if self.sleeping:
            self.sleeping = False  # one wake-up per sleep, not one per signal
            self.wake()
        if self.loop_thread is None:
            # The consumer stopped between our look at it and our append: nobody else will
            # take what we left, so apply it now.
            self.drain_orphans()

    def send_on_loop(self, item: Item) -> None:
        """Queue ``item`` on the stream, or the overflow queue. Loop thread, consumer running.

        The consumer runs, so the stream is open: with no receiver waiting (the consumer is
        awake) and room in the buffer, ``send_nowait(item)`` is one append to the buffer, so we
        append (one C call, where anyio's method is a Python frame and a dozen attribute reads);
        otherwise ``send_nowait`` hands it to the waiting consumer, or finds the stream full.
        ``QueueingListener.__call__`` inlines this.
        """
        if not self.overflowing:
            if not self.receivers and len(self.buffer) < self.max_buffer_size:
                self.buffer_append(item)
                return
            try:
                self.send_nowait(item)
            except WouldBlock:
                pass
            else:
                return
        self.overflow(item)

    def lone_on_loop(self, item: Item) -> None:
        """Apply ``item`` if it is lone, else queue it. Loop thread, the consumer ``sleeping``.

        Queueing it wakes the consumer (the stream hands the item over), so ``sleeping`` is
        cleared first: the burst's next calls take the fast path, and other threads' do not wake
        it again.
        """
        if not self.apply_lone(item):
            self.sleeping = False
            self.send_on_loop(item)

    @ki_protected
    def apply_lone(self, item: Item) -> bool:
        """Apply ``item`` in the caller if it is lone; return whether it was. Any thread.

        The caller saw the consumer asleep with the queues empty. This checks the quiet spell,
        then only *tries* ``APPLY_LOCK``: held by another thread (a write), or by this one (a
        signal handler that interrupted a write), it returns ``False`` and the caller queues the
        item. Only a circuit's transition is lone, and only while no prometheus_client lock its
        write takes is held (``Circuit.unlocked``): the caller waits for nothing.
        """
        if not self.lone:
            return False
        now = monotonic()
        if now < self.quiet_at or owned(APPLY_LOCK) or not APPLY_LOCK.acquire(blocking=False):
            return False
        try:
            _, target, signal = item
            lone = type(target) is Circuit and target.unlocked(cast("Signal | None", signal))
            if lone:
                self.quiet_at = now + self.quiet_span  # a burst's next signals are queued
                tally = Tally()
                tally.add(item)
                self.signals_applied_directly += 1
                self.apply(tally)
        finally:
            APPLY_LOCK.release()
        run_deferred()
        return lone

    def overflow(self, item: Item) -> None:
        """Queue ``item`` on the overflow queue, making the overflow sticky. Any thread; no lock."""
        self.spill_append(item)
        self.overflowing = True  # after the append: see the class docstring

    @ki_protected
    def apply_now(self, item: Item) -> None:
        """Apply ``item`` in the caller: the fallback, while no consumer runs. Any thread.

        If the calling thread holds ``APPLY_LOCK`` already (it is a signal handler that
        interrupted a write, or runs inside one), the item is deferred to the holder.
        """
        if defer(partial(self.apply_now, item)):
            return
        tally = Tally()
        tally.add(item)
        with APPLY_LOCK:
            self.signals_applied_directly += 1
            self.apply(tally)
        run_deferred()

    def apply(self, tally: Tally) -> None:
        """The one way this pipeline writes metrics. Caller must hold APPLY_LOCK."""
        self.batches += 1
        apply(tally, self)

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
        """Apply what a thread left in the bridge or the overflow queue after the consumer stopped.

        Any thread. Deferred, as in ``apply_now``, if the calling thread holds ``APPLY_LOCK``.
        """
        if defer(self.drain_orphans):
            return
        with APPLY_LOCK:
            if self.loop_thread is None:  # else a consumer (re)started: the queues are its own
                self.take_bridge(None)
                self.take_spill(None)
                self.take_calls()
                self.apply_taken()
        run_deferred()

    # -- draining (the consumer; with no consumer, under APPLY_LOCK) -------------------------------

    def take_stream(self, limit: int) -> bool:
        """Take up to ``limit`` items into ``taken``; return whether the stream ran empty.

        Loop thread only. Wake-ups come along; ``apply_taken`` skips them.
        """
        buffer = self.buffer
        n = min(len(buffer), limit)
        taken = self.taken
        before = len(taken)
        try:
            taken.extend(starmap(buffer.popleft, repeat((), n)))  # in C: no handler runs inside
        finally:
            got = len(taken) - before
            self.taken_from_stream += got
            self.signals_from_stream += got - (taken[before:].count(WAKE) if got else 0)
        return n < limit or not buffer

    def take_bridge(self, limit: int | None) -> int:
        """Take up to ``limit`` items (``None``: all) off the bridge into ``taken``; count them."""
        bridge = self.bridge
        n = len(bridge) if limit is None else min(len(bridge), limit)
        taken = self.taken
        before = len(taken)
        try:
            taken.extend(starmap(bridge.popleft, repeat((), n)))  # only we pop: n are there
        finally:
            got = len(taken) - before
            self.taken_from_bridge += got
            self.signals_from_bridge += got
        return n

    def take_spill(self, limit: int | None) -> int:
        """Take up to ``limit`` items (``None``: all) from the overflow queue; return how many.

        Ends the sticky overflow when this takes the last item; the consumer calls it only once
        the stream and the bridge ran dry.
        """
        spill = self.spill
        n = len(spill) if limit is None else min(len(spill), limit)
        if n == len(spill):
            self.overflowing = False  # before the take: a producer's later append sets it again
        taken = self.taken
        before = len(taken)
        try:
            taken.extend(starmap(spill.popleft, repeat((), n)))
        finally:
            got = len(taken) - before
            self.taken_from_spill += got
            self.signals_overflowed += got
        return n

    def add_call_queue(self, queue: CallQueue) -> None:
        """Know ``queue`` (a new meter's) until it is discarded or garbage-collected. Any thread."""
        self.call_queues.add(weakref.ref(queue, self.call_queues.discard))

    def discard_call_queue(self, queue: CallQueue) -> None:
        """Forget ``queue`` (its meter closed). Any thread."""
        self.call_queues.discard(weakref.ref(queue))  # refs to one object are equal

    def take_calls(self) -> None:
        """Take a marker into ``taken`` for every call queue that holds calls (see ``CallQueue``).

        Once the consumer stopped, under APPLY_LOCK: nothing appends to them then (the loop
        thread's calls apply directly), and what they hold is written with the rest.
        """
        for queue in _alive(self.call_queues):
            if queue:
                self.taken.append((next(_SEQ), queue.target, queue))

    def mark_calls(self) -> None:
        """Queue a marker for every call queue holding calls with none queued. Loop thread.

        What an exception between a call's append and its marker (a signal handler's) left:
        ``flush()`` marks them first, so that it waits for them too.
        """
        for queue in _alive(self.call_queues):
            if queue and not queue.armed:
                self.mark(queue)

    def mark(self, queue: CallQueue) -> None:
        """Queue ``queue`` as its marker and arm it. Loop thread, while the consumer runs there.

        Armed *after* the marker is queued (see ``CallQueue``): an exception in between leaves
        it unarmed, and the next call or ``flush()`` marks it again.
        """
        self.send_on_loop((next(_SEQ), queue.target, queue))  # never lone: see CallQueue
        queue.armed = True

    def apply_taken(self) -> None:
        """Fold ``taken`` into a tally, in sequence order, and apply it.

        First finishes ``batch``, if an exception interrupted its apply. Takes APPLY_LOCK; then,
        unless the caller still holds it, runs what a signal handler deferred meanwhile (a call
        of another pipeline's listener, which has no consumer).
        """
        self._apply_taken()
        run_deferred()  # after an exception, the consumer's stop runs it

    def _apply_taken(self) -> None:
        with APPLY_LOCK:
            if self.batch:
                self.apply(self.batch)  # older than anything taken since
            taken = self.taken
            if not taken:
                return
            if WAKE in taken:  # rare: a wake-up that found the stream no longer empty
                taken[:] = [item for item in taken if item is not WAKE]
            items = cast("list[Item]", taken)
            # By sequence number: this merges the paths, and puts a signal handler's call that
            # the stream holds ahead of the older call it interrupted back in order. A batch in
            # order already costs one comparison per item: 13-16 ns, about 20 once the numbers
            # pass 2**30, where CPython's sort leaves its fast path for small ints.
            items.sort()
            tally = Tally()
            tally.add_all(items)
            # Hand the items over to the tally in two steps with no bytecode between them that
            # lets a signal handler run: they are in taken, or in batch, never in both or neither.
            self.batch = tally
            taken.clear()
            self.apply(tally)

    # -- fork ------------------------------------------------------------------------------------

    def forget_parent(self) -> None:
        """In a child after ``os.fork()``: no consumer, nothing queued. Single-threaded."""
        self.loop_thread = None
        self.token = None
        self.sleeping = False
        # The parent's items: the parent applies them (or has); applied here too, they would
        # count twice across the two processes.
        self.open_stream()
        self.close_stream()
        self.bridge.clear()
        self.spill.clear()
        for queue in _alive(self.call_queues):
            queue.clear()
            queue.armed = False
        self.overflowing = False
        self.taken.clear()
        self.batch = Tally()


def _alive(queues: set[weakref.ref[CallQueue]]) -> list[CallQueue]:
    """The queues still alive, from a copy made in one C-level step (``list()`` of a set).

    Another thread (or a signal handler) adding or discarding a meter's queue meanwhile cannot
    make it raise "Set changed size during iteration", as iterating the set (or a ``WeakSet``,
    whose iterator is Python code) could.
    """
    return [queue for ref in list(queues) if (queue := ref()) is not None]


#: Each pipeline's state, by pipeline, for the listeners created with it. Weak keys: a pipeline
#: nobody uses goes with its state. Kept across ``importlib.reload``, so that a pipeline made
#: before a reload is found after it.
_STATES: weakref.WeakKeyDictionary[object, PipelineState] = kept(
    "queue.states", weakref.WeakKeyDictionary[object, PipelineState]
)


def states() -> list[tuple[object, PipelineState]]:
    """Every pipeline alive, with its state: for the fork hook."""
    return list(_STATES.items())
