"""Soak: a million signals through an eight-slot pipeline whose consumer keeps restarting.

CI runs 1,000,000 signals per backend (seconds). For a longer soak, set
``FLUXGATE_STREAM_SOAK_SIGNALS`` (say, 50000000) and run ``pytest -m soak``.

Checked: every counter exact and every gauge at its circuit's latest state; the pipeline's own
queues stay within their bounds all along (stream <= 8, bridge <= 8 + one in-flight append per
thread; the overflow queue, which holds what producers send while the consumer cannot run, is
not bounded: it grows while producers outpace the consumer, by scheduling); once everything is
applied, the Python objects still allocated exceed those before the soak by less than
``BLOCKS_BUDGET`` (about 80,000 are the circuits' own metric children; a leak of one object per
25 signals would exceed it; a transient queue is not a leak, and resident memory, which keeps the
pages such a queue once used, does not measure leaks); no thread or task is left behind.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections import Counter

import anyio
import pytest
from anyio.lowlevel import checkpoint
from prometheus_client import CollectorRegistry

from fluxgate_stream import PrometheusListener, SignalPipeline

from ..support.helpers import in_thread
from ..support.truth import SIGNALS, Truth, assert_exact

pytestmark = [pytest.mark.anyio, pytest.mark.soak]

TOTAL = int(os.environ.get("FLUXGATE_STREAM_SOAK_SIGNALS", "1000000"))
BUFFER = 8
THREADS = 4
LOOP_PRODUCERS = 2
CIRCUITS_EACH = 50  # 300 circuits in all
#: Allowed growth of the allocated memory blocks (``sys.getallocatedblocks``) over the soak, once
#: everything is applied, whatever its length: what is bounded by the circuits (their metric
#: children) and the interpreter's caches, never by the signals.
BLOCKS_BUDGET = 120_000


def allocated_blocks() -> int:
    """Memory blocks the interpreter has allocated now, after a full collection."""
    gc.collect()
    return sys.getallocatedblocks()


class Plan:
    """A producer's fixed, cyclic sequence of calls: cheap to send, cheap to account for."""

    def __init__(self, listeners: list[PrometheusListener], offset: int) -> None:
        self.names = [listener.name for listener in listeners]
        # Every circuit gets every one of the 30 transitions, interleaved across circuits.
        self.calls = [
            (listeners[i % len(listeners)], SIGNALS[(i // len(listeners) + offset) % len(SIGNALS)])
            for i in range(len(listeners) * len(SIGNALS))
        ]
        self.sent = 0

    def send(self, n: int) -> None:
        calls, period, start = self.calls, len(self.calls), self.sent
        for i in range(start, start + n):
            listener, signal = calls[i % period]
            listener(signal)
        self.sent = start + n

    def truth(self) -> Truth:
        """What this plan's ``sent`` calls must show."""
        truth = Truth(self.names)
        period = len(self.calls)
        rounds, rest = divmod(self.sent, period)
        for i, (listener, signal) in enumerate(self.calls):
            n = rounds + (i < rest)
            if n:
                truth.counts[listener.name, signal.old_state, signal.new_state] += n
        for i in range(max(0, self.sent - period), self.sent):
            listener, signal = self.calls[i % period]
            truth.last[listener.name] = signal.new_state
        return truth


class Soak:
    """The soak's producers, its restarting consumer, and what it observed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pipeline = SignalPipeline(max_buffer_size=BUFFER)
        self.plans = [
            Plan(
                [
                    PrometheusListener(f"p{p}_c{i}", registry, pipeline=self.pipeline)
                    for i in range(CIRCUITS_EACH)
                ],
                offset=p,
            )
            for p in range(THREADS + LOOP_PRODUCERS)
        ]
        self.share = TOTAL // len(self.plans)
        #: The coda's circuits: it takes every path once more, deterministically.
        self.coda = Plan(
            [PrometheusListener(f"coda_c{i}", registry, pipeline=self.pipeline) for i in range(2)],
            offset=0,
        )
        self.coda_paths: dict[str, int] = {}
        self.largest = {"stream": 0, "bridge": 0, "overflow": 0}
        self.restarts = 0
        self.blocks_before = allocated_blocks()
        self.blocks_after = 0
        self.done = False

    def watch(self) -> None:
        """Note how full the queues are; on the loop thread, between everything else."""
        pipeline, largest = self.pipeline, self.largest
        used = pipeline._state.send.statistics().current_buffer_used
        largest["stream"] = max(largest["stream"], used)
        largest["bridge"] = max(largest["bridge"], len(pipeline._state.bridge))
        largest["overflow"] = max(largest["overflow"], len(pipeline._state.spill))

    def thread_producer(self, plan: Plan) -> None:
        for _ in range(self.share // 1000):
            plan.send(1000)
        plan.send(self.share % 1000)

    async def loop_producer(self, plan: Plan) -> None:
        for _ in range(self.share // 200):
            plan.send(200)
            self.watch()
            await checkpoint()
        plan.send(self.share % 200)

    async def restart_periodically(self) -> None:
        while not self.done:
            async with anyio.create_task_group() as group:
                await group.start(self.pipeline.run)
                batches = self.pipeline.stats()["batches"]
                while self.pipeline.stats()["batches"] < batches + 20 and not self.done:
                    self.watch()
                    await checkpoint()
                group.cancel_scope.cancel()
            self.restarts += 1
            self.watch()
            await checkpoint()  # a moment without a consumer: calls apply directly

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.restart_periodically)
            threads = [
                threading.Thread(target=self.thread_producer, args=(plan,))
                for plan in self.plans[:THREADS]
            ]
            for thread in threads:
                thread.start()
            async with anyio.create_task_group() as loop_producers:
                for plan in self.plans[THREADS:]:
                    loop_producers.start_soon(self.loop_producer, plan)
            while any(thread.is_alive() for thread in threads):
                self.watch()
                await checkpoint()
            for thread in threads:
                thread.join()
            self.done = True
        await self.take_every_path()
        await self.pipeline.flush()
        self.blocks_after = allocated_blocks()

    async def take_every_path(self) -> None:
        """Send on each path once more, in a known order: which paths the soak's own mix takes
        depends on thread scheduling, so "each path was taken" is made sure of here."""
        pipeline, plan = self.pipeline, self.coda
        before = pipeline.statistics()
        assert not before.running  # the restarting consumer has stopped for good
        plan.send(1)  # no consumer: direct
        async with anyio.create_task_group() as group:
            await group.start(pipeline.run)
            await pipeline.flush()  # nothing queued, no overflow
            plan.send(1)  # the loop thread: the stream
            in_thread(plan.send, 1)  # another thread (the loop waits for it): the bridge
            plan.send(2 * BUFFER + 1)  # more than the stream holds, at once: the overflow queue
            await pipeline.flush()
            group.cancel_scope.cancel()
        after = pipeline.statistics()
        for path in ("stream", "bridge", "overflow", "direct"):
            self.coda_paths[path] = getattr(after, path) - getattr(before, path)


@pytest.mark.slow
@pytest.mark.timeout(660)  # above the hang guard's 600 s, so that its message is the one seen
async def test_soak_a_million_signals_through_a_tiny_restarting_pipeline(anyio_backend, registry):
    threads_before = set(threading.enumerate())
    tasks_before = len(anyio.get_running_tasks())
    soak = Soak(registry)
    with anyio.fail_after(600):
        await soak.run()

    truth = Truth([])
    for plan in soak.plans:
        assert plan.sent == soak.share
        truth.merge(plan.truth())
    truth.merge(soak.coda.truth())
    sent = sum(truth.counts.values())
    assert sent - soak.coda.sent == soak.share * len(soak.plans) >= TOTAL - len(soak.plans)
    assert_exact(registry, truth)
    stats = soak.pipeline.stats()
    assert stats["stream"] + stats["bridge"] + stats["overflow"] + stats["direct"] == sent
    assert stats["queued"] == 0
    assert soak.restarts >= 5
    # Bounded queues, whatever the number of signals; and each path was taken.
    assert soak.largest["stream"] <= BUFFER
    assert soak.largest["bridge"] <= BUFFER + THREADS
    assert soak.largest["overflow"] > 0  # it was used
    assert min(stats["stream"], stats["bridge"], stats["overflow"], stats["direct"]) > 0
    assert min(soak.coda_paths.values()) > 0, soak.coda_paths
    # Nothing retained per signal.
    growth = soak.blocks_after - soak.blocks_before
    assert growth < BLOCKS_BUDGET, f"{growth} more memory blocks allocated after the soak"
    # Nothing left behind.
    assert set(threading.enumerate()) <= threads_before
    assert len(anyio.get_running_tasks()) == tasks_before
    assert not soak.pipeline.running


def test_the_soak_plan_accounts_for_partial_rounds(registry):
    listeners = [PrometheusListener(f"plan{i}", registry) for i in range(3)]
    plan = Plan(listeners, offset=4)
    seen = plan.calls * 2 + plan.calls[:7]
    plan.sent = len(seen)
    truth = plan.truth()
    assert truth.counts == Counter((f.name, s.old_state, s.new_state) for f, s in seen)
    assert truth.last == {f.name: s.new_state for f, s in seen}
