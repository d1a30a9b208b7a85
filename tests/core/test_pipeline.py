"""The pipeline's contract: non-blocking producers, a fair consumer, bridge, fallback, shutdown."""

from __future__ import annotations

import logging
import threading
import time

import anyio
import pytest
from anyio.lowlevel import checkpoint
from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry

from fluxgate_stream import PrometheusListener, SignalPipeline, StreamingListener, Transitions
from fluxgate_stream._apply import APPLY_LOCK
from fluxgate_stream.pipeline import MAX_BATCH, MAX_SPILL_BATCH

from ..support.helpers import Consumer, in_thread, wait_until
from ..support.metrics import count, samples, shown

pytestmark = pytest.mark.anyio

OPEN = Signal("closed", "open", 0.0)
HALF = Signal("open", "half_open", 0.0)
REOPEN = Signal("half_open", "open", 0.0)
CLOSE = Signal("half_open", "closed", 0.0)


def flap(listener: PrometheusListener, times: int) -> None:
    """Drive ``times`` full cycles closed -> open -> half_open -> closed."""
    for _ in range(times):
        listener(OPEN)
        listener(HALF)
        listener(CLOSE)


async def test_loop_thread_call_only_queues_while_the_consumer_runs(anyio_backend, registry):
    pipeline = SignalPipeline(lone=False)  # else a lone transition is applied in the call
    listener = PrometheusListener("api", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        before = samples(registry)
        listener(OPEN)
        assert samples(registry) == before  # nothing written by the call itself
        await pipeline.flush()
        assert shown(registry, "api") == "open"
        assert count(registry, "api", "closed", "open") == 1.0


async def test_a_loop_thread_call_hands_its_signal_to_a_waiting_consumer(anyio_backend, registry):
    # The fast path appends to the stream's buffer only while no receiver waits. A consumer
    # that waits while `sleeping` is already clear (a thread's wake-up in flight, or a signal
    # handler's call that came just before the wait) is handed the signal, as anyio's
    # send_nowait would: not left waiting with it in the buffer.
    pipeline = SignalPipeline(lone=False)
    listener = PrometheusListener("handed", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        pipeline._state.sleeping = False  # what such a producer leaves behind
        listener(OPEN)
        assert not pipeline._state.buffer  # handed over, not buffered
        await wait_until(lambda: count(registry, "handed", "closed", "open") == 1.0)  # no flush


async def test_loop_thread_call_never_takes_a_prometheus_lock(anyio_backend, registry):
    pipeline = SignalPipeline()
    listener = PrometheusListener("api", registry, pipeline=pipeline)
    circuit = listener._target
    held, release = threading.Event(), threading.Event()

    def hold_metric_locks() -> None:
        with circuit.gauge._lock, circuit.counter._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold_metric_locks)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)  # the first call would be lone
        holder.start()
        held.wait()
        try:
            for _ in range(100):  # would deadlock the loop thread if a call wrote a metric
                listener(OPEN)
        finally:
            release.set()
            holder.join()
        await pipeline.flush()
    assert count(registry, "api", "closed", "open") == 100.0


async def test_without_a_consumer_calls_apply_directly_like_upstream(anyio_backend, registry):
    pipeline = SignalPipeline()
    listener = PrometheusListener("api", registry, pipeline=pipeline)
    listener(OPEN)  # before run()
    assert shown(registry, "api") == "open"
    async with Consumer(pipeline):
        listener(HALF)
    listener(CLOSE)  # after run() ended
    assert shown(registry, "api") == "closed"
    assert count(registry, "api", "open", "half_open") == 1.0
    assert count(registry, "api", "half_open", "closed") == 1.0


async def test_batches_coalesce_but_keep_exact_counts_and_the_latest_state(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=10_000, lone=False)  # every signal queued
    listeners = [PrometheusListener(f"c{i}", registry, pipeline=pipeline) for i in range(3)]
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        for listener in listeners:
            flap(listener, 1000)
        listeners[1](OPEN)
        # All wait in the buffer, but for the first if it went straight to the waiting consumer.
        assert pipeline._state.send.statistics().current_buffer_used in (9000, 9001)
        assert count(registry, "c0", "closed", "open") == 0.0  # at 0 since creation: not applied
        await pipeline.flush()
        for i in range(3):
            assert count(registry, f"c{i}", "closed", "open") == 1000.0 + (i == 1)
            assert count(registry, f"c{i}", "half_open", "closed") == 1000.0
        assert [shown(registry, f"c{i}") for i in range(3)] == ["closed", "open", "closed"]


async def test_consumer_yields_between_batches_under_a_storm_and_stops_promptly(
    anyio_backend, registry
):
    pipeline = SignalPipeline(max_buffer_size=64)
    listener = PrometheusListener("storm", registry, pipeline=pipeline)
    stop = threading.Event()
    sent = 0

    def storm() -> None:
        nonlocal sent
        while not stop.is_set():
            listener(OPEN)
            sent += 1

    thread = threading.Thread(target=storm)
    try:
        # Deadlines bound a hang, not a speed: under coverage on a loaded machine the storm
        # thread may manage only a few thousand calls a second. The outer one fires before
        # pytest-timeout's 120 s, so a stop that hangs fails here, with the storm thread stopped.
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                await tg.start(pipeline.run)
                thread.start()
                for _ in range(200):  # the app's own task keeps getting the loop
                    await checkpoint()
                # A storm: 30 buffers' worth sent, many batches taken while this task polled.
                await wait_until(
                    lambda: sent > 2_000 and pipeline.statistics().batches > 10, within=60
                )
                tg.cancel_scope.cancel()  # and cancellation is not delayed by the storm
    finally:
        stop.set()
        thread.join()
    assert not pipeline.running
    assert count(registry, "storm", "closed", "open") == float(sent)


async def test_full_buffer_on_the_loop_thread_neither_blocks_nor_loses(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=2)
    a = PrometheusListener("a", registry, pipeline=pipeline)
    b = PrometheusListener("b", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        flap(a, 500)
        b(OPEN)
        a(OPEN)
        assert pipeline._state.send.statistics().current_buffer_used == 2
        assert pipeline._state.overflowing
        await pipeline.flush()
        assert count(registry, "a", "closed", "open") == 501.0
        assert count(registry, "a", "half_open", "closed") == 500.0
        assert (shown(registry, "a"), shown(registry, "b")) == ("open", "open")
        assert not pipeline._state.overflowing


async def test_a_backlog_on_the_overflow_queue_is_taken_by_halves_below_the_cap(
    anyio_backend, registry
):
    # Producer threads may hold the GIL for most of the time: with a cap of MAX_BATCH per batch,
    # a consumer that gets the loop less often than MAX_BATCH items arrive would fall behind for
    # good. Each batch takes at least half the overflow queue, up to MAX_SPILL_BATCH: this
    # backlog's half is just below that cap.
    pipeline = SignalPipeline(max_buffer_size=2)
    listener = PrometheusListener("backlog", registry, pipeline=pipeline)
    cycles = 10 * MAX_BATCH  # 30 x MAX_BATCH signals
    async with Consumer(pipeline):
        in_thread(flap, listener, cycles)  # the loop is blocked: nearly all go to the overflow
        before = pipeline.statistics()
        assert before.overflow > 29 * MAX_BATCH  # on the overflow queue, none taken yet
        await pipeline.flush()
        after = pipeline.statistics()
        assert not pipeline._state.overflowing  # the queue drained: the stream is used again
    # Halves: 15, 7.5, 3.75, 1.9 x MAX_BATCH, then the rest: 6 batches or so (a wake-up may add
    # one), where a fixed cap would take 30.
    assert after.batches - before.batches <= 10
    assert count(registry, "backlog", "closed", "open") == float(cycles)
    assert count(registry, "backlog", "half_open", "closed") == float(cycles)
    assert shown(registry, "backlog") == "closed"


async def test_a_batch_from_the_overflow_queue_stays_bounded_after_a_blocked_loop(anyio_backend):
    # Half of a long backlog would be one long fold while other tasks wait: a batch takes at
    # most MAX_SPILL_BATCH items from the overflow queue, and the backlog still drains exactly.
    pipeline = SignalPipeline(max_buffer_size=2)
    sizes: list[int] = []

    class Sizes:
        def write(self, transitions: Transitions) -> None:
            sizes.append(sum(transitions.counts.values()))

    listener = StreamingListener("blocked", Sizes(), pipeline=pipeline)
    flaps = MAX_SPILL_BATCH * 7 // 8  # 2.6 x MAX_SPILL_BATCH signals: half of them is above it

    def storm() -> None:
        for _ in range(flaps):
            listener(OPEN)
            listener(HALF)
            listener(CLOSE)

    async with Consumer(pipeline):
        in_thread(storm)  # the loop is blocked: all but the bridge's 2 go to the overflow
        assert pipeline.statistics().overflow == 3 * flaps - 2
        assert (3 * flaps - 2) // 2 > MAX_SPILL_BATCH
        await pipeline.flush()
        assert not pipeline._state.overflowing  # the queue drained: the stream is used again
    assert sum(sizes) == 3 * flaps  # each signal once
    # The bridge's 2 and a capped take, then the rest: no batch is larger than the first.
    assert sizes[0] == max(sizes) == MAX_SPILL_BATCH + 2


async def test_a_partial_take_from_the_overflow_queue_keeps_later_signals_behind_it(
    anyio_backend, registry
):
    # The overflow queue's items are newer than the stream's: until it is drained, new signals
    # follow them there, so only the take of its last item ends the overflow. The takes are
    # made by hand, on the loop thread, while the bridge still holds 2 older items (the consumer
    # takes the overflow queue only once the bridge ran dry; the apply merges by sequence).
    pipeline = SignalPipeline(max_buffer_size=2, lone=False)
    listener = PrometheusListener("partial", registry, pipeline=pipeline)
    state = pipeline._state
    async with Consumer(pipeline):
        await wait_until(lambda: state.sleeping)
        listener(OPEN)  # handed to the waiting consumer: no receiver waits from here on
        assert not state.receivers
        assert not state.buffer
        in_thread(flap, listener, 100)  # the loop is blocked: 2 in the bridge, 298 overflow
        assert len(state.spill) == 298
        assert state.take_spill(100) == 100
        assert state.overflowing
        # The stream's buffer has room and no receiver waits, so only the overflow check keeps
        # this call (the listener's own fast path) from appending to the stream.
        listener(OPEN)
        assert not state.buffer
        assert len(state.spill) == 199
        assert state.take_spill(200) == 199
        assert not state.overflowing
        await pipeline.flush()
    assert count(registry, "partial", "closed", "open") == 102.0
    assert count(registry, "partial", "half_open", "closed") == 100.0
    assert shown(registry, "partial") == "open"


async def test_threads_feed_the_consumer_through_the_bridge(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=8)
    listeners = [PrometheusListener(f"t{i}", registry, pipeline=pipeline) for i in range(4)]
    async with Consumer(pipeline):
        threads = [threading.Thread(target=flap, args=(listener, 2000)) for listener in listeners]
        for thread in threads:
            thread.start()
        await anyio.to_thread.run_sync(lambda: [t.join() for t in threads])
        await anyio.to_thread.run_sync(flap, listeners[0], 1)
        listeners[0](REOPEN)
        await pipeline.flush()
    for i in range(4):
        assert count(registry, f"t{i}", "closed", "open") == 2000.0 + (i == 0)
        assert count(registry, f"t{i}", "open", "half_open") == 2000.0 + (i == 0)
        assert shown(registry, f"t{i}") == ("open" if i == 0 else "closed")
    assert count(registry, "t0", "half_open", "open") == 1.0


async def test_a_thread_wakes_a_sleeping_consumer_once_not_per_signal(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=10_000, lone=False)  # the first one too is bridged
    listener = PrometheusListener("wake", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        in_thread(flap, listener, 1000)  # the loop is blocked: the consumer cannot wake between
        assert len(pipeline._state.bridge) == 3000
        await wait_until(lambda: not pipeline._state.bridge)
        assert pipeline.stats()["wakeups"] == 1
        await pipeline.flush()
        assert count(registry, "wake", "closed", "open") == 1000.0


async def test_a_full_bridge_overflows_into_the_ledger(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=4)
    listener = PrometheusListener("spill", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        in_thread(flap, listener, 100)
        assert len(pipeline._state.bridge) == 4
        assert pipeline._state.overflowing
        in_thread(listener, REOPEN)
        await pipeline.flush()
    assert count(registry, "spill", "half_open", "closed") == 100.0
    assert count(registry, "spill", "half_open", "open") == 1.0
    assert shown(registry, "spill") == "open"


async def test_cancelled_consumer_applies_everything_queued_then_falls_back(
    anyio_backend, registry
):
    pipeline = SignalPipeline(max_buffer_size=16, lone=False)  # every signal queued
    listener = PrometheusListener("shutdown", registry, pipeline=pipeline)
    consumer = Consumer(pipeline)
    await consumer.start()
    flap(listener, 10)  # stream and ledger
    in_thread(flap, listener, 10)  # bridge and ledger
    listener(OPEN)
    assert count(registry, "shutdown", "closed", "open") == 0.0  # not applied yet
    await consumer.stop()
    assert count(registry, "shutdown", "closed", "open") == 21.0
    assert shown(registry, "shutdown") == "open"
    listener(HALF)
    assert shown(registry, "shutdown") == "half_open"


async def test_flush_returns_whether_running_stopping_or_stopped(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=4)
    listener = PrometheusListener("flush", registry, pipeline=pipeline)
    await pipeline.flush()  # never started
    results: list[int] = []
    async with anyio.create_task_group() as app, anyio.create_task_group() as consumer:
        await consumer.start(pipeline.run)
        flap(listener, 50)
        await pipeline.flush()  # running
        assert count(registry, "flush", "closed", "open") == 50.0
        flap(listener, 50)

        async def flusher(i: int) -> None:
            if i == 4:
                consumer.cancel_scope.cancel()  # the consumer is stopping from here on
            await pipeline.flush()
            results.append(i)

        for i in range(5):
            app.start_soon(flusher, i)
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert count(registry, "flush", "closed", "open") == 100.0
    await pipeline.flush()  # stopped


async def test_flush_from_another_threads_loop_is_refused(anyio_backend, registry):
    pipeline = SignalPipeline()
    async with Consumer(pipeline):
        with pytest.raises(
            RuntimeError,
            match=r"^SignalPipeline\.flush\(\) must be awaited on the event loop that runs its "
            r"consumer$",
        ):
            await anyio.to_thread.run_sync(anyio.run, pipeline.flush)


async def test_only_one_consumer_at_a_time(anyio_backend):
    pipeline = SignalPipeline()
    async with Consumer(pipeline):
        with pytest.raises(
            RuntimeError, match=r"^this SignalPipeline's consumer is already running$"
        ):
            await pipeline.run()
    async with Consumer(pipeline):  # and it can be started again after it stopped
        assert pipeline.running


async def test_close_is_ordered_after_the_listeners_queued_signals(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=1000)
    listener = PrometheusListener("transient", registry, pipeline=pipeline)
    other = PrometheusListener("other", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        flap(listener, 5)
        other(OPEN)
        listener.close()
        await pipeline.flush()
        assert samples(registry, "transient") == {}
        assert shown(registry, "other") == "open"
        listener(OPEN)  # series return on the next transition
        listener.close()
        listener.close()  # idempotent
        listener(OPEN)
        await pipeline.flush()
        assert shown(registry, "transient") == "open"
        assert count(registry, "transient", "closed", "open") == 1.0
        assert (
            count(registry, "transient", "open", "half_open") == 0.0
        )  # back at 0, with the series


async def test_close_from_a_thread_is_ordered_after_loop_signals_queued_before(
    anyio_backend, registry
):
    pipeline = SignalPipeline(max_buffer_size=1000)
    listener = PrometheusListener("cross", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        flap(listener, 3)  # stream
        in_thread(listener.close)  # bridge
        listener(OPEN)  # stream, after the close
        await pipeline.flush()
    assert count(registry, "cross", "closed", "open") == 1.0
    assert count(registry, "cross", "half_open", "closed") == 0.0  # the voided one: at 0
    assert shown(registry, "cross") == "open"


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, transitions: Transitions) -> None:
        self.calls += 1
        raise RuntimeError(f"sink for {transitions.name} broke")


async def test_one_failing_target_never_kills_the_consumer(anyio_backend, registry, caplog):
    pipeline = SignalPipeline()
    good = PrometheusListener("good", registry, pipeline=pipeline)
    sink = Exploding()
    bad = StreamingListener("bad", sink, pipeline=pipeline)
    async with Consumer(pipeline):
        with caplog.at_level(logging.ERROR, logger="fluxgate_stream"):
            for _ in range(3):
                bad(OPEN)
                good(OPEN)
                await pipeline.flush()
        assert pipeline.running
        assert count(registry, "good", "closed", "open") == 3.0
    assert sink.calls == 3
    failures = [r for r in caplog.records if r.name == "fluxgate_stream"]
    assert [r.getMessage() for r in failures] == [  # logged once, when the failures start
        "applying signals for circuit 'bad' failed; until a write succeeds, further failures "
        "of this circuit are counted, not logged"
    ]
    assert pipeline.stats()["apply_errors"] == 3


async def test_thousands_of_circuits_on_one_pipeline(anyio_backend):
    registry = CollectorRegistry()
    pipeline = SignalPipeline(max_buffer_size=256)
    listeners = [PrometheusListener(f"c{i:05d}", registry, pipeline=pipeline) for i in range(5000)]
    async with Consumer(pipeline):
        for i, listener in enumerate(listeners):
            listener(OPEN)
            if i % 2:
                listener(HALF)
        await pipeline.flush()
    values = samples(registry)
    ones = {
        dict(labels)["circuit_name"]: dict(labels)["state"]
        for (name, labels), value in values.items()
        if name == "circuit_breaker_state" and value == 1.0
    }
    assert ones == {f"c{i:05d}": "half_open" if i % 2 else "open" for i in range(5000)}
    gauge_series = [k for k in values if k[0] == "circuit_breaker_state"]
    assert len(gauge_series) == 6 * 5000
    opens = [
        v
        for (_, labels), v in values.items()
        if ("old_state", "closed") in labels and ("new_state", "open") in labels
    ]
    assert opens == [1.0] * 5000


async def test_signals_older_than_an_applied_close_stay_void_across_batches(
    anyio_backend, registry
):
    pipeline = SignalPipeline(max_buffer_size=4096)
    listener = PrometheusListener("long", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        flap(listener, 700)  # 2100 items: more than one batch takes from the stream
        in_thread(listener.close)  # from the bridge: applied with the first batch
        await pipeline.flush()
    assert samples(registry, "long") == {}


async def test_a_lone_transition_is_applied_in_the_call_and_wakes_nothing(anyio_backend, registry):
    pipeline = SignalPipeline(batch_window=3600.0)  # within the hour after it, none is lone
    listener = PrometheusListener("lone", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        before = pipeline.statistics()
        listener(OPEN)
        assert count(registry, "lone", "closed", "open") == 1.0  # no await: in the call
        after = pipeline.statistics()
        assert (after.direct, after.batches) == (before.direct + 1, before.batches + 1)
        assert (after.stream, after.wakeups) == (before.stream, before.wakeups)
        assert pipeline._state.sleeping
        listener(HALF)  # the next one is queued: it goes to the consumer, batched
        assert shown(registry, "lone") == "open"
        await pipeline.flush()
        assert shown(registry, "lone") == "half_open"
        assert pipeline.statistics().stream == before.stream + 1
        assert pipeline.statistics().direct == before.direct + 1


async def test_a_lone_transition_from_a_thread_is_applied_in_that_thread(anyio_backend, registry):
    pipeline = SignalPipeline(batch_window=3600.0)
    listener = PrometheusListener("lone", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        before = pipeline.statistics()
        in_thread(listener, OPEN)  # the loop is blocked meanwhile: nobody else could apply it
        assert count(registry, "lone", "closed", "open") == 1.0
        after = pipeline.statistics()
        assert (after.direct, after.bridge, after.wakeups) == (
            before.direct + 1,
            before.bridge,
            before.wakeups,
        )
        in_thread(listener, HALF)  # not lone: over the bridge, with a wake-up
        assert shown(registry, "lone") == "open"
        await pipeline.flush()  # which cuts short the window that wake-up opened
        assert shown(registry, "lone") == "half_open"
        after = pipeline.statistics()
        assert (after.direct, after.bridge) == (before.direct + 1, before.bridge + 1)
        assert after.wakeups > before.wakeups


async def test_a_lone_transition_never_waits_for_another_writer_it_queues_instead(
    anyio_backend, registry
):
    pipeline = SignalPipeline()
    listener = PrometheusListener("busy", registry, pipeline=pipeline)
    held, release = threading.Event(), threading.Event()

    def write_meanwhile() -> None:  # what a write of another thread holds
        with APPLY_LOCK:
            held.set()
            release.wait()

    holder = threading.Thread(target=write_meanwhile)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        await wait_until(lambda: time.monotonic() >= pipeline._state.quiet_at)
        holder.start()
        held.wait()
        try:
            listener(OPEN)  # waiting for the lock would hang the test here
            stats = pipeline.statistics()
        finally:
            release.set()
            holder.join()
        await pipeline.flush()
        assert (stats.direct, pipeline.statistics().stream) == (0, 1)  # queued, for the consumer
    assert count(registry, "busy", "closed", "open") == 1.0


async def test_without_lone_a_signal_after_idle_is_applied_by_the_consumer_not_after_the_window(
    anyio_backend, registry
):
    pipeline = SignalPipeline(batch_window=3600.0, lone=False)  # a window would hold it an hour
    listener = PrometheusListener("lone", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        batches = pipeline.stats()["batches"]
        listener(OPEN)
        # No flush(): the consumer applies it and goes back to sleep, in one batch.
        await wait_until(
            lambda: count(registry, "lone", "closed", "open") == 1.0 and pipeline._state.sleeping
        )
        assert pipeline.stats()["batches"] == batches + 1
        assert pipeline._window is None


async def _applied_one_by_one(pipeline, registry, listener, name: str, applied: float) -> None:
    """A lone signal, applied at once: afterwards the window is armed for ``batch_window``."""
    listener(OPEN)
    await wait_until(
        lambda: count(registry, name, "closed", "open") == applied and pipeline._state.sleeping
    )


async def test_the_batch_window_gathers_signals_faster_than_it_into_one_batch(
    anyio_backend, registry
):
    pipeline = SignalPipeline(batch_window=3600.0)  # only flush() ends this window
    listener = PrometheusListener("trickle", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        await _applied_one_by_one(pipeline, registry, listener, "trickle", 1.0)
        batches = pipeline.stats()["batches"]
        for _ in range(50):  # each within the hour after the previous batch
            listener(OPEN)
            await checkpoint()  # the loop runs, but the consumer waits out its window
        assert count(registry, "trickle", "closed", "open") == 1.0
        assert pipeline._window is not None
        with anyio.fail_after(10):
            await pipeline.flush()  # cuts the window short
        assert count(registry, "trickle", "closed", "open") == 51.0
        assert pipeline.stats()["batches"] == batches + 1


async def test_a_consumer_cancelled_in_its_window_applies_the_signal_it_holds(
    anyio_backend, registry
):
    pipeline = SignalPipeline(batch_window=3600.0)
    listener = PrometheusListener("held", registry, pipeline=pipeline)
    consumer = Consumer(pipeline)
    await consumer.start()
    await wait_until(lambda: pipeline._state.sleeping)
    await _applied_one_by_one(pipeline, registry, listener, "held", 1.0)
    listener(HALF)
    await wait_until(lambda: pipeline._window is not None)  # received, waiting out the window
    await consumer.stop()
    assert shown(registry, "held") == "half_open"
    assert count(registry, "held", "open", "half_open") == 1.0


async def test_after_a_quiet_spell_longer_than_the_window_a_signal_is_applied_at_once(
    anyio_backend, registry, monkeypatch
):
    # Whether a signal is "within the window" is read from time.monotonic (by the listener's
    # lone check and the consumer's wake-up): a clock the test moves, so that a stall of the
    # machine between two lines cannot turn the gathered signal into a lone one.
    now = [1_000.0]
    for module in ("fluxgate_stream.pipeline", "fluxgate_stream._queue"):
        monkeypatch.setattr(f"{module}.monotonic", lambda: now[0])
    window = 0.05
    pipeline = SignalPipeline(batch_window=window)
    listener = PrometheusListener("quiet", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        await _applied_one_by_one(pipeline, registry, listener, "quiet", 1.0)
        listener(OPEN)  # within the window after the previous batch (the clock stands): it gathers
        await wait_until(lambda: pipeline._window is not None)
        await wait_until(lambda: count(registry, "quiet", "closed", "open") == 2.0)
        await wait_until(lambda: pipeline._state.sleeping)
        now[0] += 2 * window  # a quiet spell: the clock passes a whole window
        listener(OPEN)
        windows_seen = 0
        with anyio.fail_after(10):
            while count(registry, "quiet", "closed", "open") != 3.0:
                windows_seen += pipeline._window is not None
                await checkpoint()
        assert windows_seen == 0


async def test_without_a_batch_window_each_signal_is_applied_when_the_loop_allows(
    anyio_backend, registry
):
    pipeline = SignalPipeline(batch_window=0)
    listener = PrometheusListener("eager", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        for i in range(1, 4):
            listener(OPEN)
            await wait_until(lambda i=i: count(registry, "eager", "closed", "open") == float(i))
