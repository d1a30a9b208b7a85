"""``SignalPipeline``: a bounded anyio stream, one consumer task, a thread bridge, a sync fallback.

Concurrency model
-----------------
* The *loop thread* is the thread whose event loop runs ``run()``. Only it touches the anyio
  stream (anyio's memory streams are not thread-safe): producers on it ``send_nowait``, the
  consumer receives, and thread wake-ups are delivered onto it with ``run_sync_soon``.
* Other threads append to ``_bridge``, a ``collections.deque`` (``append``/``popleft`` are atomic).
  A thread wakes the consumer only if it is asleep, by scheduling a callback on the loop thread;
  it never waits for the loop.
* When the stream or the bridge is full, producers fold their signal into ``_ledger``, a bounded
  ``Tally`` guarded by ``_lock``, and keep doing so until the consumer has taken the ledger
  ("sticky" overflow): newer signals then never overtake older ones still queued.
* With no consumer running, producers apply directly (the fallback), under ``APPLY_LOCK``.
* ``_loop_thread`` is written only with ``APPLY_LOCK`` held (start and stop of ``run()``), so a
  fallback or orphan drain, which holds it too, never interleaves with a consumer starting or
  stopping.
* Once woken from sleep, the consumer waits ``batch_window`` seconds before taking a batch (a
  pending ``flush()`` cancels the wait); the item it received holds in ``_held`` meanwhile, so a
  cancellation there still applies it.
* Every queued item carries a process-wide sequence number: the gauge shows the latest one applied,
  whichever path each took; counters are plain sums, so order does not matter to them. The loop
  thread numbers and sends its items one at a time, so the stream holds them in sequence order;
  a batch sorts only to merge bridge items in.
* A listener's call inlines ``submit()``'s loop-thread branch (one Python frame less on the
  breaker's path): it reads ``_loop_thread``, ``_overflowing`` and ``_send_nowait`` as that branch
  does, and hands every other case to ``submit()``, so what is said here of ``submit()`` holds for
  it too.
* Under trio, a Ctrl-C raises ``KeyboardInterrupt`` wherever the main thread is, unless the code
  is KI-protected: the consumer's code is, so that a batch taken off the queues is always applied
  (trio then delivers the interrupt at the main task's next checkpoint). asyncio's runner turns
  Ctrl-C into cancellation, which the consumer handles by applying everything queued.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from contextlib import suppress
from itertools import repeat
from typing import TYPE_CHECKING, Final, cast

import anyio
from anyio import WouldBlock
from anyio.lowlevel import checkpoint, current_token

from fluxgate_stream._apply import APPLY_LOCK, SEQUENCE, Item, Tally, apply
from fluxgate_stream._checks import check_count, check_seconds
from fluxgate_stream._compat import ki_protected, protect_from_keyboard_interrupt, same_class

if TYPE_CHECKING:
    from anyio.abc import TaskStatus
    from anyio.lowlevel import EventLoopToken
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from fluxgate.signal import Signal

    from fluxgate_stream._apply import Target

__all__ = ["SignalPipeline", "default_pipeline"]

#: The most items the consumer takes from each of the stream and the bridge per batch. Between
#: batches it yields to the event loop.
MAX_BATCH: Final = 4096

#: The process-wide sequence numbers (``tally.SEQUENCE``), under the name the hot paths use.
_SEQ: itertools.count[int] = SEQUENCE
_get_ident = threading.get_ident


class _Wake:
    """The item a thread's wake-up sends to a sleeping consumer; it carries nothing."""

    __slots__ = ()


_WAKE: Final = _Wake()


class _FlushRequest:
    """A ``flush()`` waiting for the consumer to get past what was queued when it was called."""

    __slots__ = ("bridge", "done", "ledger", "stream")

    def __init__(self, stream: int, bridge: int, ledger: int) -> None:
        self.stream = stream
        self.bridge = bridge
        self.ledger = ledger
        self.done = anyio.Event()


class SignalPipeline:
    """Carries circuit-breaker signals from listeners to the metrics, off the breakers' path.

    Start its single consumer in your task group: ``await tg.start(pipeline.run)``. While it runs,
    a listener call on the event-loop thread is one ``send_nowait`` on a bounded anyio memory object
    stream; a call from any other thread is a deque append (plus, only when the consumer sleeps,
    one non-blocking wake-up). When no consumer runs, listener calls apply directly, exactly like
    upstream's listener, so plain scripts need no consumer at all.

    When the buffer is full, producers neither block nor drop: the signal is folded into an
    overflow ledger (per circuit: latest state and summed counts, so its size is bounded by the
    number of circuits) that the consumer applies after the queued items.

    Args:
        max_buffer_size: capacity of the stream, and of the thread bridge. Must be a positive int.
        batch_window: seconds the consumer, once woken from sleep, lets signals gather before it
            takes a batch (a pending ``flush()`` cuts it short). A trickle of signals then costs
            one wake-up and one batch per window rather than per signal; the metrics lag by at
            most about this much. 0 applies as soon as the consumer gets the loop.

    Raises:
        TypeError: ``max_buffer_size`` is not an ``int``, or ``batch_window`` not a number.
        ValueError: ``max_buffer_size`` is less than 1, or ``batch_window`` is negative or not
            finite.
    """

    def __init__(self, max_buffer_size: int = 1024, *, batch_window: float = 0.001) -> None:
        check_count(max_buffer_size, "max_buffer_size")
        self.max_buffer_size: Final = max_buffer_size
        self.batch_window: Final = check_seconds(batch_window, "batch_window", zero=True)
        # Each run() gets a fresh stream and closes it when it ends; until then, a closed one.
        self._send, self._receive = self._new_stream()  # loop thread only
        self._send.close()
        self._receive.close()
        self._send_nowait = self._send.send_nowait
        self._bridge: Final[deque[Item]] = deque()  # any thread appends; the consumer pops
        self._bridge_append: Final = self._bridge.append
        self._lock: Final = threading.Lock()  # guards _ledger and _overflowing
        self._ledger = Tally()
        self._overflowing = False
        self._loop_thread: int | None = None  # the consumer's thread id while run() runs
        self._token: EventLoopToken | None = None  # the consumer's event loop while run() runs
        self._sleeping = False  # the consumer awaits the stream; it must be woken for bridge items
        # Consumer-owned progress counters, and the flushes waiting on them (loop thread only).
        self._taken_from_stream = 0
        self._taken_from_bridge = 0
        self._ledgers_taken = 0
        self._flushes: list[_FlushRequest] = []
        self._window: anyio.CancelScope | None = None  # the consumer's batch window, while open
        self._held: Item | None = None  # the item received before the window, while it is open
        # Statistics: each counter has one writer context (noted), so none needs a lock of its own.
        self._signals_from_stream = 0  # loop thread (consumer)
        self._signals_from_bridge = 0  # loop thread (consumer), or under APPLY_LOCK when stopped
        self._signals_overflowed = 0  # under _lock
        self._signals_applied_directly = 0  # under APPLY_LOCK
        self._wakeups = 0  # loop thread
        self._batches = 0  # under APPLY_LOCK
        self._apply_errors = 0  # under APPLY_LOCK

    def _new_stream(
        self,
    ) -> tuple[MemoryObjectSendStream[Item | _Wake], MemoryObjectReceiveStream[Item | _Wake]]:
        return anyio.create_memory_object_stream[Item | _Wake](self.max_buffer_size)

    def __repr__(self) -> str:
        running = "running" if self._loop_thread is not None else "stopped"
        return f"<SignalPipeline max_buffer_size={self.max_buffer_size} {running}>"

    def stats(self) -> dict[str, int]:
        """A snapshot of the pipeline's counters, for dashboards and tests.

        Keys: ``stream``, ``bridge``, ``overflow`` and ``direct`` (signals and closes that took
        each path: the loop thread's stream, the thread bridge, the overflow ledger, the
        synchronous fallback), ``wakeups`` (cross-thread wake-ups delivered), ``batches``
        (tallies applied), ``apply_errors`` (targets whose write raised), ``queued`` (items in
        the stream and the bridge now) and ``running`` (1 while a consumer runs).
        """
        return {
            "stream": self._signals_from_stream,
            "bridge": self._signals_from_bridge,
            "overflow": self._signals_overflowed,
            "direct": self._signals_applied_directly,
            "wakeups": self._wakeups,
            "batches": self._batches,
            "apply_errors": self._apply_errors,
            "queued": self._send.statistics().current_buffer_used + len(self._bridge),
            "running": int(self.running),
        }

    @property
    def running(self) -> bool:
        """Whether a consumer is running (so listener calls are queued, not applied directly)."""
        return self._loop_thread is not None

    # -- producers -------------------------------------------------------------------------------

    def submit(self, target: Target, signal: Signal | None) -> None:
        """Queue a transition (or, with ``signal=None``, a ``close()``) for ``target``.

        Never blocks on the event loop and never raises for a full buffer. Callable from any
        thread. Listeners validate their input before calling this. This is the producers' hot
        path: it is written for speed (bound methods, no helper calls on the common branches).
        ``QueueingListener.__call__`` inlines the first branch; keep the two alike.
        """
        loop_thread = self._loop_thread
        if loop_thread == _get_ident():
            # On the loop thread the consumer cannot start, stop or run under us.
            item: Item = (next(_SEQ), target, signal)
            if not self._overflowing:
                try:
                    self._send_nowait(item)
                except WouldBlock:
                    self._overflow(item)
            else:
                self._overflow(item)
        elif loop_thread is None:
            self._apply_now((next(_SEQ), target, signal))
        else:
            item = (next(_SEQ), target, signal)
            if self._overflowing or len(self._bridge) >= self.max_buffer_size:
                self._overflow(item)
            else:
                self._bridge_append(item)
            # The consumer sets _sleeping *before* its last look at the bridge and the ledger,
            # and we read it *after* queueing: either it sees our item or we see it asleep.
            if self._sleeping:
                self._sleeping = False  # one wake-up per sleep, not one per signal
                self._wake()
            if self._loop_thread is None:
                # The consumer stopped between our look at it and our append: nobody else will
                # take what we left, so apply it now.
                self._drain_orphans()

    def _overflow(self, item: Item) -> None:
        with self._lock:
            self._ledger.add(item)
            self._overflowing = True
            self._signals_overflowed += 1

    @ki_protected
    def _apply_now(self, item: Item) -> None:
        tally = Tally()
        tally.add(item)
        with APPLY_LOCK:
            self._signals_applied_directly += 1
            self._apply(tally)

    def _apply(self, tally: Tally) -> None:
        """The one way this pipeline writes metrics. Caller must hold APPLY_LOCK."""
        self._batches += 1
        self._apply_errors += apply(tally)

    def _wake(self) -> None:
        """Schedule a wake-up of the consumer on its loop thread, without waiting. Any thread."""
        token = self._token
        if token is None:
            return
        # A loop that has finished cannot be woken; the caller's orphan check covers that case.
        with suppress(anyio.RunFinishedError, RuntimeError):
            token.backend_class.run_sync_soon(self._wake_on_loop, (), token.native_token)

    def _wake_on_loop(self) -> None:
        # Runs on the thread of the loop the wake-up was scheduled on. The consumer may have
        # stopped (or another started elsewhere) since: then the stream is not ours to touch.
        if self._loop_thread == threading.get_ident():
            # A full stream means the consumer has work anyway; a closed one, that it has stopped.
            with suppress(WouldBlock, anyio.ClosedResourceError):
                self._send.send_nowait(_WAKE)
                self._wakeups += 1

    @ki_protected
    def _drain_orphans(self) -> None:
        """Apply what a thread left in the bridge or ledger after the consumer stopped.

        Any thread.
        """
        with APPLY_LOCK:
            if self._loop_thread is not None:
                return  # a consumer (re)started: the queues are its own again
            self._apply_queued(self._take_bridge(None), self._take_ledger())

    # -- the consumer ----------------------------------------------------------------------------

    @ki_protected
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Consume queued signals until cancelled; start it with ``await tg.start(pipeline.run)``.

        Applies signals in batches of at most ``MAX_BATCH`` items per path, yielding to the event
        loop after each batch, so a storm can neither starve other tasks nor delay cancellation.
        When cancelled, it applies everything still queued before returning (synchronously, so
        cancellation cannot interrupt it); later listener calls apply directly.

        Raises:
            RuntimeError: this pipeline's consumer is already running.
        """
        protect_from_keyboard_interrupt()
        with APPLY_LOCK:
            if self._loop_thread is not None:
                raise RuntimeError("this SignalPipeline's consumer is already running")
            self._token = current_token()
            self._send, self._receive = self._new_stream()
            self._send_nowait = self._send.send_nowait
            self._loop_thread = threading.get_ident()
        try:
            task_status.started()
            await self._consume()
        finally:
            self._stop()

    @ki_protected
    async def _consume(self) -> None:
        first: Item | None = None
        while True:
            if self._step(first):
                first = None
                if self._bridge or self._overflowing or self._send.statistics().current_buffer_used:
                    await checkpoint()  # fairness: yield between batches, and be cancellable
                    continue
                # Drained: fall through to sleep; receive() yields to the event loop first.
            self._release_flushes()
            self._sleeping = True
            if self._bridge or self._overflowing:
                self._sleeping = False
                continue
            received = await self._receive.receive()
            self._sleeping = False
            self._taken_from_stream += 1
            if isinstance(received, _Wake):
                first = None
            else:
                first = received
                self._signals_from_stream += 1
            if self.batch_window and not self._flushes:
                # Let signals gather before the batch: a trickle then costs one wake-up and one
                # batch per window instead of one per signal. flush() cuts the window short; if
                # the consumer is cancelled meanwhile, _stop() applies the held item.
                self._held = first
                with anyio.CancelScope() as window:
                    self._window = window
                    await anyio.sleep(self.batch_window)
                self._window = None
                self._held = None

    @ki_protected
    def _step(self, first: Item | None) -> bool:
        """Take and apply one batch; return whether there was anything. Loop thread only."""
        items: list[Item] = [] if first is None else [first]
        stream_empty = self._take_stream(items, MAX_BATCH)
        bridge = self._take_bridge(MAX_BATCH)
        items += bridge
        ledger = None
        # Sticky overflow stops the stream and the bridge growing, so they empty and the ledger,
        # which only holds signals newer than theirs, is applied after them.
        if stream_empty and len(bridge) < MAX_BATCH and self._overflowing:
            ledger = self._take_ledger()
        # The stream's items (``first`` among them) are in sequence order already, as the loop
        # thread numbers and sends them one by one: only bridge items need merging in.
        self._apply_queued(items, ledger, merge=bool(bridge))
        self._release_flushes()
        return bool(items) or ledger is not None

    def _take_stream(self, into: list[Item], limit: int) -> bool:
        """Receive up to ``limit`` items; return whether the stream ran empty. Loop thread only."""
        receive_nowait = self._receive.receive_nowait
        append = into.append
        before = len(into)
        wakes = 0
        empty = False
        try:  # the drain's per-item loop: kept to a call, a class check and an append
            for _ in repeat(None, limit):
                item = receive_nowait()
                if isinstance(item, tuple):  # an Item; a _Wake (from any copy of us) is not
                    append(item)
                else:
                    wakes += 1
        except WouldBlock:
            empty = True
        signals = len(into) - before
        self._taken_from_stream += signals + wakes
        self._signals_from_stream += signals
        return empty

    def _take_bridge(self, limit: int | None) -> list[Item]:
        popleft = self._bridge.popleft
        items: list[Item] = []
        with suppress(IndexError):
            while limit is None or len(items) < limit:
                items.append(popleft())
        self._taken_from_bridge += len(items)
        self._signals_from_bridge += len(items)
        return items

    def _take_ledger(self) -> Tally | None:
        with self._lock:
            if not self._overflowing:
                return None
            ledger, self._ledger = self._ledger, Tally()
            self._overflowing = False
        self._ledgers_taken += 1
        return ledger

    def _apply_queued(self, items: list[Item], ledger: Tally | None, *, merge: bool = True) -> None:
        """Apply ``items``, then ``ledger``; ``merge=False`` only for items already in order."""
        with APPLY_LOCK:
            if items:
                if merge:
                    items.sort()  # by sequence number: each path is in order, so this merges
                tally = Tally()
                for item in items:
                    tally.add(item)
                self._apply(tally)
            if ledger is not None:
                self._apply(ledger)

    @ki_protected
    def _stop(self) -> None:
        """Leave consumer mode and apply everything still queued. Loop thread, in ``finally``."""
        with APPLY_LOCK:  # fallback producers wait here, so they apply after all that was queued
            self._loop_thread = None
            self._token = None
            self._sleeping = False
            items: list[Item] = [] if self._held is None else [self._held]
            self._held = None
            self._window = None
            while not self._take_stream(items, MAX_BATCH):
                pass
            items += self._take_bridge(None)
            self._apply_queued(items, self._take_ledger())
            self._send.close()
            self._receive.close()
        for request in self._flushes:
            request.done.set()
        self._flushes.clear()

    # -- flush -----------------------------------------------------------------------------------

    @ki_protected
    async def flush(self) -> None:
        """Return once everything queued before the call has been applied to the metrics.

        Never hangs: with no consumer running it applies any leftovers itself and returns; if the
        consumer stops while we wait, its shutdown applies everything and releases us.

        Raises:
            RuntimeError: the consumer runs on another thread's event loop (wait on that loop).
        """
        loop_thread = self._loop_thread
        if loop_thread is None:
            self._drain_orphans()
            await checkpoint()
            return
        if loop_thread != threading.get_ident():
            raise RuntimeError(
                "SignalPipeline.flush() must be awaited on the event loop that runs its consumer"
            )
        request = _FlushRequest(
            stream=self._taken_from_stream + self._send.statistics().current_buffer_used,
            bridge=self._taken_from_bridge + len(self._bridge),
            ledger=self._ledgers_taken + (1 if self._overflowing else 0),
        )
        self._flushes.append(request)
        if self._window is not None:
            self._window.cancel()  # a flush does not wait out the batch window
        if self._sleeping:
            self._sleeping = False
            self._wake_on_loop()
        await request.done.wait()

    def _release_flushes(self) -> None:
        if not self._flushes:
            return
        waiting: list[_FlushRequest] = []
        for request in self._flushes:
            if (
                self._taken_from_stream >= request.stream
                and self._taken_from_bridge >= request.bridge
                and self._ledgers_taken >= request.ledger
            ):
                request.done.set()
            else:
                waiting.append(request)
        self._flushes = waiting


_default: SignalPipeline | None = None
_default_lock = threading.Lock()


def resolve_pipeline(pipeline: object) -> SignalPipeline:
    """Return ``pipeline``, or the default pipeline for ``None``: the ``pipeline=`` argument.

    Raises:
        TypeError: ``pipeline`` is neither ``None`` nor a ``SignalPipeline``.
    """
    if pipeline is None:
        return default_pipeline()
    # After importlib.reload, pipelines made before it are of the previous class.
    if not same_class(pipeline, SignalPipeline):
        raise TypeError(f"pipeline must be a SignalPipeline, got {type(pipeline).__name__}")
    return cast("SignalPipeline", pipeline)


def default_pipeline() -> SignalPipeline:
    """Return the process-wide pipeline used by listeners created without ``pipeline=``.

    Run its consumer like any other: ``await tg.start(default_pipeline().run)``. Until you do,
    listeners that use it apply directly, as upstream's listener does.
    """
    global _default  # noqa: PLW0603  # one lazily created default, as documented
    with _default_lock:
        if _default is None:
            _default = SignalPipeline()
        return _default
