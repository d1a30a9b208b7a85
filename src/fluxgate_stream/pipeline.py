"""``SignalPipeline``: a bounded anyio stream, one consumer task, a thread bridge, a sync fallback.

Concurrency model
-----------------
The state that producers (listeners, on any thread) and the consumer (``run()``, on the loop
thread) share is one ``PipelineState`` (``fluxgate_stream._queue``), whose docstring states, per
field, which thread owns what and what is ordered. In short:

* The *loop thread* is the thread whose event loop runs ``run()``. Only it touches the anyio
  stream: producers on it ``send_nowait``, the consumer receives, and thread wake-ups are
  delivered onto it with ``run_sync_soon``.
* Other threads append to a ``collections.deque``, the thread bridge, and wake the consumer only
  if it is asleep, by scheduling a callback on the loop thread; they never wait for the loop.
* When the stream or the bridge is full, producers fold their signal into a bounded overflow
  ledger under a lock that guards only that fold, and keep doing so until the consumer has taken
  the ledger ("sticky" overflow): newer signals then never overtake older ones still queued.
* With no consumer running, producers apply directly (the fallback), under ``APPLY_LOCK``. The
  consumer starts and stops with ``APPLY_LOCK`` held, so a fallback never interleaves with it.
* Once woken from sleep less than ``batch_window`` seconds after it took its previous batch
  (signals arrive faster than the window), the consumer waits ``batch_window`` seconds before
  taking a batch (a pending ``flush()`` cancels the wait); woken after a quieter spell, it takes
  the batch at once. The item it received holds in ``_held`` during a window, so a cancellation
  there still applies it. ``_held``, ``_window``, ``_quiet_at`` and ``_flushes`` belong to the
  consumer: loop thread only.
* Every queued item carries a process-wide sequence number: the gauge shows the latest one applied,
  whichever path each took; counters are plain sums, so order does not matter to them.
* A listener's call inlines ``PipelineState.submit()``'s loop-thread branch (one Python frame less
  on the breaker's path), reading the same public fields in the same order, and hands every other
  case to ``submit()``, so what is said of ``submit()`` holds for it too.
* Under trio, a Ctrl-C raises ``KeyboardInterrupt`` wherever the main thread is, unless the code
  is KI-protected: the consumer's code is (``@ki_protected``), so that a batch taken off the
  queues is always applied (trio then delivers the interrupt at the main task's next checkpoint).
  asyncio's runner turns Ctrl-C into cancellation, which the consumer handles by applying
  everything queued.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Final, cast

import anyio
from anyio import current_time
from anyio.lowlevel import checkpoint, current_token

from fluxgate_stream._apply import APPLY_LOCK, Item, Tally
from fluxgate_stream._checks import check_count, check_seconds
from fluxgate_stream._compat import ki_protected, protect_from_keyboard_interrupt, same_class
from fluxgate_stream._queue import PipelineState, Wake

if TYPE_CHECKING:
    from anyio.abc import TaskStatus
    from fluxgate.signal import Signal

    from fluxgate_stream._apply import Target

__all__ = ["PipelineStatistics", "SignalPipeline", "default_pipeline"]

#: The most items the consumer takes from each of the stream and the bridge per batch. Between
#: batches it yields to the event loop.
MAX_BATCH: Final = 4096


@dataclass(frozen=True, slots=True)
class PipelineStatistics:
    """A snapshot of a pipeline's counters: what ``SignalPipeline.statistics()`` returns.

    The first four count signals and ``close()`` calls by the path they took; every item takes
    exactly one. Counters only grow, for the life of the pipeline (across consumer restarts).

    Attributes:
        stream: queued on the event-loop thread, into the anyio stream, while a consumer ran.
        bridge: queued from another thread, into the thread bridge, while a consumer ran.
        overflow: folded into the overflow ledger because the stream or the bridge was full.
        direct: applied in the caller, because no consumer ran (the synchronous fallback).
        wakeups: wake-ups delivered to a sleeping consumer: by a signal from another thread
            (at most one per sleep), or by a ``flush()`` on the loop thread.
        batches: tallies applied to the metrics (a consumer batch, a ledger, a direct apply).
        apply_errors: target writes that raised (a failing metric write or sink).
        queued: items in the stream and the bridge at the moment of the snapshot.
        max_buffer_size: the capacity of the stream, and of the thread bridge.
        running: whether a consumer was running.
    """

    stream: int
    bridge: int
    overflow: int
    direct: int
    wakeups: int
    batches: int
    apply_errors: int
    queued: int
    max_buffer_size: int
    running: bool


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
        batch_window: seconds the consumer lets signals gather before it takes a batch, once
            they arrive faster than that: when it is woken less than ``batch_window`` after its
            previous batch (a pending ``flush()`` cuts the wait short). Signals closer together
            than the window then cost one wake-up and one batch per window rather than per
            signal, and the metrics lag by at most about this much; a lone signal after a
            quieter spell is applied as soon as the consumer gets the loop, with no wait. 0
            never waits.

    Raises:
        TypeError: ``max_buffer_size`` is not an ``int``, or ``batch_window`` not a number.
        ValueError: ``max_buffer_size`` is less than 1, or ``batch_window`` is negative or not
            finite.
    """

    def __init__(self, max_buffer_size: int = 1024, *, batch_window: float = 0.001) -> None:
        check_count(max_buffer_size, "max_buffer_size")
        self.max_buffer_size: Final = max_buffer_size
        self.batch_window: Final = check_seconds(batch_window, "batch_window", zero=True)
        self._state: Final = PipelineState(self, max_buffer_size)  # shared with the listeners
        # The consumer's own (loop thread only): waiting flushes, the batch window while it is
        # open, and the item received before the window, while it is open.
        self._flushes: list[_FlushRequest] = []
        self._window: anyio.CancelScope | None = None
        self._held: Item | None = None
        # The loop time until which a wake-up opens the batch window: one window after the
        # previous batch was taken (-inf: the first signal finds the consumer idle).
        self._quiet_at: float = float("-inf")

    def __repr__(self) -> str:
        running = "running" if self.running else "stopped"
        return f"<SignalPipeline max_buffer_size={self.max_buffer_size} {running}>"

    def statistics(self) -> PipelineStatistics:
        """A snapshot of the pipeline's counters (see ``PipelineStatistics``). Any thread.

        Each counter is read once, without a lock: a snapshot taken while signals flow may be a
        few items behind on one counter relative to another, never torn.
        """
        state = self._state
        return PipelineStatistics(
            stream=state.signals_from_stream,
            bridge=state.signals_from_bridge,
            overflow=state.signals_overflowed,
            direct=state.signals_applied_directly,
            wakeups=state.wakeups,
            batches=state.batches,
            apply_errors=state.apply_errors,
            queued=state.queued(),
            max_buffer_size=self.max_buffer_size,
            running=state.loop_thread is not None,
        )

    def stats(self) -> dict[str, int]:
        """``statistics()`` as a dict, for dashboards and tests (``running`` as 0 or 1).

        Keys: ``stream``, ``bridge``, ``overflow``, ``direct``, ``wakeups``, ``batches``,
        ``apply_errors``, ``queued`` and ``running``, each a field of ``PipelineStatistics``.
        """
        stats = asdict(self.statistics())
        del stats["max_buffer_size"]  # not a counter: the pipeline's own attribute
        stats["running"] = int(stats["running"])
        return stats

    @property
    def running(self) -> bool:
        """Whether a consumer is running (so listener calls are queued, not applied directly)."""
        return self._state.loop_thread is not None

    def submit(self, target: Target, signal: Signal | None) -> None:
        """Queue a transition (or, with ``signal=None``, a ``close()``) for ``target``.

        Never blocks on the event loop and never raises for a full buffer. Callable from any
        thread. Listeners validate their input before calling this.
        """
        self._state.submit(target, signal)

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
        state = self._state
        with APPLY_LOCK:
            if state.loop_thread is not None:
                raise RuntimeError("this SignalPipeline's consumer is already running")
            state.token = current_token()
            state.open_stream()
            state.loop_thread = threading.get_ident()
        try:
            task_status.started()
            await self._consume()
        finally:
            self._stop()

    @ki_protected
    async def _consume(self) -> None:
        state = self._state
        first: Item | None = None
        while True:
            if self._step(first):
                first = None
                if state.bridge or state.overflowing or state.send.statistics().current_buffer_used:
                    await checkpoint()  # fairness: yield between batches, and be cancellable
                    continue
                # Drained: fall through to sleep; receive() yields to the event loop first.
            self._release_flushes()
            state.sleeping = True
            if state.bridge or state.overflowing:
                state.sleeping = False
                continue
            received = await state.receive.receive()
            state.sleeping = False
            state.taken_from_stream += 1
            if isinstance(received, Wake):
                first = None
            else:
                first = received
                state.signals_from_stream += 1
            if self.batch_window and not self._flushes:
                # Adaptive: a wake-up less than a window after the previous batch means signals
                # arrive faster than the window, so let them gather (one wake-up and one batch
                # per window, not per signal); a lone signal after a quiet spell is applied at
                # once, with no timer. flush() cuts a window short; if the consumer is cancelled
                # meanwhile, _stop() applies the held item.
                now = current_time()
                if now < self._quiet_at:
                    self._quiet_at = now + 2 * self.batch_window  # the batch ends a window on
                    self._held = first
                    with anyio.CancelScope() as window:
                        self._window = window
                        await anyio.sleep(self.batch_window)
                    self._window = None
                    self._held = None
                else:
                    self._quiet_at = now + self.batch_window

    @ki_protected
    def _step(self, first: Item | None) -> bool:
        """Take and apply one batch; return whether there was anything. Loop thread only."""
        state = self._state
        items: list[Item] = [] if first is None else [first]
        stream_empty = state.take_stream(items, MAX_BATCH)
        bridge = state.take_bridge(MAX_BATCH)
        items += bridge
        ledger: Tally | None = None
        # Sticky overflow stops the stream and the bridge growing, so they empty and the ledger,
        # which only holds signals newer than theirs, is applied after them.
        if stream_empty and len(bridge) < MAX_BATCH and state.overflowing:
            ledger = state.take_ledger()
        # The stream's items (``first`` among them) are in sequence order already, as the loop
        # thread numbers and sends them one by one: only bridge items need merging in.
        state.apply_queued(items, ledger, merge=bool(bridge))
        self._release_flushes()
        return bool(items) or ledger is not None

    @ki_protected
    def _stop(self) -> None:
        """Leave consumer mode and apply everything still queued. Loop thread, in ``finally``."""
        state = self._state
        with APPLY_LOCK:  # fallback producers wait here, so they apply after all that was queued
            state.loop_thread = None
            state.token = None
            state.sleeping = False
            items: list[Item] = [] if self._held is None else [self._held]
            self._held = None
            self._window = None
            while not state.take_stream(items, MAX_BATCH):
                pass
            items += state.take_bridge(None)
            state.apply_queued(items, state.take_ledger())
            state.close_stream()
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
        state = self._state
        loop_thread = state.loop_thread
        if loop_thread is None:
            state.drain_orphans()
            await checkpoint()
            return
        if loop_thread != threading.get_ident():
            raise RuntimeError(
                "SignalPipeline.flush() must be awaited on the event loop that runs its consumer"
            )
        request = _FlushRequest(
            stream=state.taken_from_stream + state.send.statistics().current_buffer_used,
            bridge=state.taken_from_bridge + len(state.bridge),
            ledger=state.ledgers_taken + (1 if state.overflowing else 0),
        )
        self._flushes.append(request)
        if self._window is not None:
            self._window.cancel()  # a flush does not wait out the batch window
        if state.sleeping:
            state.sleeping = False
            state.wake_on_loop()
        await request.done.wait()

    def _release_flushes(self) -> None:
        if not self._flushes:
            return
        state = self._state
        waiting: list[_FlushRequest] = []
        for request in self._flushes:
            if (
                state.taken_from_stream >= request.stream
                and state.taken_from_bridge >= request.bridge
                and state.ledgers_taken >= request.ledger
            ):
                request.done.set()
            else:
                waiting.append(request)
        self._flushes = waiting


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


_default: SignalPipeline | None = None
_default_lock = threading.Lock()
