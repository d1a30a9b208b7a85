"""``SignalPipeline``: a bounded anyio stream, one consumer task, a thread bridge, a sync fallback.

Concurrency model
-----------------
The state that producers (listeners, on any thread) and the consumer (``run()``, on the loop
thread) share is one ``PipelineState`` (``fluxgate_stream._queue``), whose docstring states, per
field, which thread owns what and what is ordered. In short:

* The *loop thread* is the thread whose event loop runs ``run()``. Only it touches the anyio
  stream: producers on it send without waiting, the consumer receives, and thread wake-ups are
  delivered onto it with ``run_sync_soon``.
* Other threads append to a ``collections.deque``, the thread bridge, and wake the consumer only
  if it is asleep, by scheduling a callback on the loop thread; they never wait for the loop.
* When the stream or the bridge is full, producers append their signal to a third deque, the
  overflow queue, and keep doing so until the consumer has taken it ("sticky" overflow): newer
  signals then never overtake older ones still queued. The consumer folds it, after the stream
  and the bridge. No producer takes a lock or waits while a consumer runs, so a signal handler
  that calls a listener (on a full buffer, on the loop thread, mid-anything) cannot deadlock.
  The overflow queue is not bounded: it holds what producers send faster than the consumer
  applies it (see ``PipelineState``).
* With no consumer running, producers apply directly (the fallback), under ``APPLY_LOCK``. The
  consumer starts and stops with ``APPLY_LOCK`` held, so a fallback never interleaves with it. A
  thread that already holds ``APPLY_LOCK`` (a signal handler that interrupted a write, or the
  consumer's own stop) defers its call to the holder instead of writing into the middle of a
  write.
* Once woken from sleep less than ``batch_window`` seconds after it took its previous batch
  (signals arrive faster than the window), the consumer waits ``batch_window`` seconds before
  taking a batch (a pending ``flush()`` cancels the wait); woken after a quieter spell, it takes
  the batch at once. The item it received waits in ``PipelineState.taken`` meanwhile, so a
  cancellation there still applies it. ``_window``, ``_quiet_at``, ``_waiting`` and ``_flushes``
  belong to the consumer: loop thread only.
* What the consumer took off the queues stays in ``PipelineState.taken``, then in
  ``PipelineState.batch``, until written, and ``apply`` takes each target out as it is written:
  whatever exception ends the consumer between two bytecodes (a ``SystemExit`` from a SIGTERM
  handler, a sink's ``KeyboardInterrupt``, cancellation), its shutdown applies the rest, and
  nothing twice. An exception raised *inside* one target's write ends that write where it is:
  a ``Circuit``'s write is resumable (each part leaves the record once written), so the stop
  writes the rest; a user's sink is not called again, and the rest of its record is lost. The
  one window left: an exception that lands inside a prometheus_client increment, after it
  counted, counts it again when the write resumes. (The consumer does not sleep in anyio's
  ``receive()``, which can drop the item a sender handed it if an exception comes before it
  returns, but in ``_compat.wait_for_item``.)
  Under trio, an exception raised by a signal handler while trio's own scheduler runs is a
  ``TrioInternalError``: trio supports only its own KeyboardInterrupt delivery there.
* Every queued item carries a process-wide sequence number: the gauge shows the latest one applied,
  whichever path each took; counters are plain sums, so order does not matter to them.
* A listener's call inlines the common cases of ``PipelineState.submit()`` (one Python frame
  less on the breaker's path): on the loop thread, and from another thread while the consumer is
  awake and the bridge has room. It reads the fields ``submit()`` reads before and after it
  queues (those that the wake-up and the sticky overflow depend on), and hands every other case
  to ``submit()``, so what is said of ``submit()`` holds for it too.
* Under trio, a Ctrl-C raises ``KeyboardInterrupt`` wherever the main thread is, unless the code
  is KI-protected: the consumer's code is (``@ki_protected``), so that a batch taken off the
  queues is always applied (trio then delivers the interrupt at the main task's next checkpoint).
  asyncio's runner turns Ctrl-C into cancellation, which the consumer handles by applying
  everything queued.
* ``os.fork()``: the forking thread holds ``APPLY_LOCK`` across the fork, so the child's copy of
  the metrics is never half-written by another thread; in the child, every pipeline is stopped,
  with nothing of the parent's queued (the parent applies that) and no flush waiting: the
  child's metrics are the parent's as applied at the fork, its listener calls apply directly,
  ``flush()`` returns and ``run()`` starts a consumer of its own. A child that keeps running
  the parent's event loop (a bare ``os.fork()`` inside a task) is not supported: that loop's
  file descriptors are shared with the parent.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from time import monotonic
from typing import TYPE_CHECKING, Final, cast

import anyio
from anyio.lowlevel import checkpoint, current_token

from fluxgate_stream._apply import APPLY_LOCK, run_deferred
from fluxgate_stream._checks import (
    check_bool,
    check_count,
    check_seconds,
    check_signal,
    check_target,
)
from fluxgate_stream._compat import (
    at_fork,
    event_class,
    ki_protected,
    protect_from_keyboard_interrupt,
    same_class,
    wait_for_item,
)
from fluxgate_stream._queue import WAKE, PipelineState, states

if TYPE_CHECKING:
    from anyio.abc import TaskStatus
    from fluxgate.signal import Signal

    from fluxgate_stream._apply import Target

__all__ = ["PipelineStatistics", "SignalPipeline", "default_pipeline"]

_log = logging.getLogger("fluxgate_stream")

#: The most items the consumer takes from each of the stream and the bridge per batch; from the
#: overflow queue it takes this many or half the queue, whichever is more, up to
#: ``MAX_SPILL_BATCH`` (``_step``). Between batches it yields to the event loop.
MAX_BATCH: Final = 4096

#: The most items the consumer takes from the overflow queue per batch, so that a batch stays
#: bounded after a loop blocked while threads queued: a fold of this many takes 74-153 ms on a
#: 2-core VM (1,000 circuits). Half the queue is below it under a storm (a thread sampling the
#: queue in bench section 5's storm saw at most 41,900 items), so the cap binds only once the
#: queue holds more than twice this many, and then the backlog drains in batches of this size.
MAX_SPILL_BATCH: Final = 16 * MAX_BATCH

#: The least time after an apply during which a signal is not lone (``lone=``): with a shorter
#: ``batch_window``, a burst's calls would each be applied in the caller.
_QUIET: Final = 0.001


@dataclass(frozen=True, slots=True)
class PipelineStatistics:
    """A snapshot of a pipeline's counters: what ``SignalPipeline.statistics()`` returns.

    The first four count signals and ``close()`` calls by the path they took; every item takes
    exactly one. Counters only grow, for the life of the pipeline (across consumer restarts).

    Attributes:
        stream: queued on the event-loop thread, into the anyio stream, while a consumer ran.
        bridge: queued from another thread, into the thread bridge, while a consumer ran.
        overflow: queued on the overflow queue because the stream or the bridge was full (or
            had been, and the queue was not yet drained).
        direct: applied in the caller, because no consumer ran (the synchronous fallback), or
            because it was a lone transition (see ``SignalPipeline``'s ``lone``).
        wakeups: wake-ups delivered to a sleeping consumer: by a signal from another thread
            (at most one per sleep), or by a ``flush()`` on the loop thread.
        batches: tallies applied to the metrics (a consumer batch, a direct apply).
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

    __slots__ = ("bridge", "done", "spill", "stream")

    def __init__(self, stream: int, bridge: int, spill: int) -> None:
        self.stream = stream
        self.bridge = bridge
        self.spill = spill
        self.done = anyio.Event()


class SignalPipeline:
    """Carries circuit-breaker signals from listeners to the metrics, off the breakers' path.

    Start its single consumer in your task group: ``await tg.start(pipeline.run)``. While it runs,
    a listener call on the event-loop thread is one non-blocking send on a bounded anyio memory
    object stream; a call from any other thread is a deque append (plus, only when the consumer
    sleeps, one non-blocking wake-up). A lone transition, which would wake the consumer for itself
    alone, is applied in the call instead (see ``lone``). When no consumer runs, listener calls
    apply directly, exactly like upstream's listener, so plain scripts need no consumer at all.

    When the buffer is full, producers neither block nor drop: the signal goes to an overflow
    queue (a deque, appended without a lock) that the consumer applies after the queued items.

    Args:
        max_buffer_size: capacity of the stream, and of the thread bridge. Must be a positive int.
        batch_window: seconds the consumer lets signals gather before it takes a batch, once
            they arrive faster than that: when it is woken less than ``batch_window`` after its
            previous batch (a pending ``flush()`` cuts the wait short). Signals closer together
            than the window then cost one wake-up and one batch per window rather than per
            signal, and the metrics lag by at most about this much; a signal after a quieter
            spell is applied with no wait (in the call, if it is lone). 0 never waits.
        lone: whether a *lone* transition, one that finds the consumer asleep with nothing
            applied for ``batch_window`` (at least 1 ms), is applied by its caller, as with no
            consumer, rather than queued: the breaker's call then pays the writes (still less
            than upstream's listener does), and nothing is woken, where waking the consumer for
            it would cost more CPU in all. The caller never waits for a lock held for this: if
            another thread is writing, or a prometheus_client lock the write takes is held (a
            scrape), the signal is queued. Signals that follow within the window are queued and
            batched. Only a ``PrometheusListener``'s transitions are ever lone (not a sink's,
            nor a ``close()``), and none in multiprocess mode. ``False``: while the consumer
            runs, every call only queues.

    Raises:
        TypeError: ``max_buffer_size`` is not an ``int``, ``batch_window`` not a number, or
            ``lone`` not a ``bool``.
        ValueError: ``max_buffer_size`` is less than 1, or ``batch_window`` is negative or not
            finite.
    """

    def __init__(
        self, max_buffer_size: int = 1024, *, batch_window: float = 0.001, lone: bool = True
    ) -> None:
        max_buffer_size = cast("int", check_count(max_buffer_size, "max_buffer_size"))
        self.max_buffer_size: Final = max_buffer_size
        self.batch_window: Final = check_seconds(batch_window, "batch_window", zero=True)
        self.lone: Final = check_bool(lone, "lone")
        # Shared with the listeners.
        self._state: Final = PipelineState(
            self, max_buffer_size, quiet_span=max(self.batch_window, _QUIET), lone=self.lone
        )
        # The consumer's own (loop thread only): waiting flushes, the batch window while it is
        # open. (What it took and has not written is in the shared state: PipelineState.taken.)
        self._flushes: list[_FlushRequest] = []
        self._window: anyio.CancelScope | None = None
        # True while the consumer waits on the empty stream. Unlike PipelineState.sleeping, no
        # producer writes it: a thread killed between clearing ``sleeping`` and its wake-up (an
        # asynchronous exception) leaves the consumer asleep with ``sleeping`` False, and a
        # flush() still knows to wake it.
        self._waiting = False

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
            overflow=state.overflowed(),
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
        thread. Both arguments are checked first, so that nothing the consumer cannot apply is
        queued (listeners check theirs, and submit to the shared state directly).

        Raises:
            TypeError: ``target`` is not a listener's target; ``signal`` is neither ``None`` nor
                a ``fluxgate.signal.Signal``, or its ``timestamp`` is not a number.
            ValueError: ``signal``'s states are not fluxgate's, or its timestamp is not finite.
        """
        check_target(target)
        self._state.submit(target, None if signal is None else check_signal(signal))

    # -- the consumer ----------------------------------------------------------------------------

    @ki_protected
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Consume queued signals until cancelled; start it with ``await tg.start(pipeline.run)``.

        Applies signals in batches of at most ``MAX_BATCH`` items from the stream and from the
        bridge, and that many or half its backlog, whichever is more, up to ``MAX_SPILL_BATCH``,
        from the overflow queue, yielding to the event loop after each batch, so a storm can
        neither starve other tasks nor delay cancellation, nor leave the consumer a fixed share
        of what producer threads queue. The price: after a loop blocked while threads queued
        many items, other tasks may wait for a fold of up to ``MAX_SPILL_BATCH`` of them
        (74-153 ms on a 2-core VM). When cancelled, it applies everything still queued before
        returning (synchronously, so cancellation cannot interrupt it); later listener calls
        apply directly. The same holds when it ends by any other exception: one raised by a
        sink, or a ``SystemExit`` raised by a signal handler in the middle of a batch.

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
        run_deferred()  # what a signal handler deferred while we held the lock
        try:
            task_status.started()
            await self._consume()
        finally:
            self._stop()

    @ki_protected
    async def _consume(self) -> None:
        state = self._state
        make_event = event_class()  # the backend, looked up once
        while True:
            applied = self._step()
            if applied and (state.bridge or state.overflowing or state.spill or state.buffer):
                await checkpoint()  # fairness: yield between batches, and be cancellable
                continue
            # Drained (or nothing was there): sleep; receive() yields to the event loop first.
            self._release_flushes()
            if applied:
                # Until then a signal is not lone: it is queued, and its wake-up opens the window.
                state.quiet_at = monotonic() + state.quiet_span
            state.sleeping = True
            if state.bridge or state.overflowing or state.spill:
                state.sleeping = False
                continue
            # receive(), except that the item goes straight into state.taken, where it stays
            # until written (see PipelineState), whatever exception comes. Unlike receive(), no
            # checkpoint first: the stream is empty (the loop thread has not run a producer since
            # the look above, but for a signal handler, for which wait_for_item looks again), so
            # the wait yields to the event loop, and is where a cancellation lands; a busy stream
            # took the checkpoint above. One task step per lone signal, not two.
            before = len(state.taken)
            self._waiting = True
            await wait_for_item(state.receive, state.taken, make_event)
            self._waiting = False
            state.sleeping = False
            if len(state.taken) > before:
                state.taken_from_stream += 1
                if state.taken[-1] is not WAKE:
                    state.signals_from_stream += 1
            # Adaptive: a wake-up less than a window after the consumer went to sleep (or after
            # a lone apply) means signals arrive faster than the window, so let them gather (one
            # wake-up and one batch per window, not per signal); a signal after a quiet spell is
            # applied at once, with no timer (when it was not lone: lone=False, or a write was
            # under way). flush() cuts a window short; if the consumer is cancelled meanwhile,
            # _stop() applies the item in state.taken. monotonic(): no backend lookup; a
            # window is a span of real time.
            if self.batch_window and not self._flushes and monotonic() < state.quiet_at:
                with anyio.CancelScope() as window:
                    self._window = window
                    await anyio.sleep(self.batch_window)
                self._window = None

    @ki_protected
    def _step(self) -> bool:
        """Take and apply one batch; return whether there was anything. Loop thread only."""
        state = self._state
        stream_empty = state.take_stream(MAX_BATCH)
        bridged = state.take_bridge(MAX_BATCH)
        # Sticky overflow stops the stream and the bridge growing, so they empty and the
        # overflow queue, which only holds signals newer than theirs, is taken after them.
        if stream_empty and bridged < MAX_BATCH and (state.overflowing or state.spill):
            # Half the backlog, if more than MAX_BATCH: producer threads can hold the GIL for most
            # of the time (the loop thread gets it back a switch interval after each yield), and
            # with a fixed cap a consumer that gets the loop less often than MAX_BATCH items
            # arrive falls behind for good, its queue growing with the storm's length. Taking half
            # keeps the queue within about twice what arrives between two batches; the cap keeps
            # a batch bounded after a blocked loop (see MAX_SPILL_BATCH).
            take = max(MAX_BATCH, len(state.spill) // 2)
            state.take_spill(min(take, MAX_SPILL_BATCH))
        anything = bool(state.taken) or bool(state.batch)
        state.apply_taken()
        self._release_flushes()
        return anything

    @ki_protected
    def _stop(self) -> None:
        """Leave consumer mode and apply everything still queued. Loop thread, in ``finally``.

        Also whatever the consumer had taken and not yet written, when an exception (a sink's,
        or a signal handler's ``SystemExit``) ended it mid-batch.
        """
        state = self._state
        try:
            with (
                APPLY_LOCK
            ):  # fallback producers wait here, so they apply after all that was queued
                # First: from here on a signal handler's listener call defers to us (run_deferred).
                state.loop_thread = None
                state.token = None
                state.sleeping = False
                self._window = None
                try:
                    while not state.take_stream(MAX_BATCH):
                        pass
                    state.take_bridge(None)
                    state.take_spill(None)
                    state.take_calls()
                    state.apply_taken()
                finally:
                    state.close_stream()
            run_deferred()
        finally:
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
        state.mark_calls()
        request = _FlushRequest(
            stream=state.taken_from_stream + len(state.buffer),
            bridge=state.taken_from_bridge + len(state.bridge),
            spill=state.taken_from_spill + len(state.spill),
        )
        self._flushes.append(request)
        if self._window is not None:
            self._window.cancel()  # a flush does not wait out the batch window
        if self._waiting:  # not state.sleeping: a killed producer may have cleared that
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
                and state.taken_from_spill >= request.spill
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


def _after_fork_in_child() -> None:
    """Every pipeline of a child after ``os.fork()``: stopped, with nothing of the parent's queued.

    The child has only the thread that forked: no consumer runs in it, whatever ran in the
    parent. Each pipeline forgets the parent's consumer, queued items and waiting flushes
    (``PipelineState.forget_parent``): the parent applies those, and the child's metrics stay
    the parent's as applied at the fork (``_apply`` holds ``APPLY_LOCK`` across the fork). The
    child's listener calls then apply directly, and ``run()`` may start a consumer. One pipeline
    that cannot be reset does not stop the others.
    """
    global _default_lock  # noqa: PLW0603  # a lock a thread the child has not may have held
    _default_lock = threading.Lock()
    for owner, state in states():
        try:
            state.forget_parent()
            if same_class(owner, SignalPipeline):
                pipeline = cast("SignalPipeline", owner)
                pipeline._flushes = []  # pyright: ignore[reportPrivateUsage]  # the parent's tasks wait on them
                pipeline._window = None  # pyright: ignore[reportPrivateUsage]  # the parent's loop
        except Exception:  # noqa: BLE001, PERF203  # the next pipeline still needs resetting
            _log.exception("resetting a SignalPipeline after fork failed")


# Registered once (a reload finds it kept); runs this module's current code.
at_fork("pipeline.states", after_in_child=_after_fork_in_child)
