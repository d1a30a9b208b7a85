"""Producer threads killed mid-call by an asynchronous exception; no other circuit corrupted.

Run by ``tests/core/test_faults.py`` as ``kill_producer_threads.py BACKEND running`` (any other
second argument: no consumer); prints one JSON line: the kills, what came out wrong, and the state
a later listener shows.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import checkpoint
from prometheus_client import CollectorRegistry

from fluxgate_stream import ALL_STATES, PrometheusListener, SignalPipeline
from tests.support.metrics import samples, shown
from tests.support.truth import SIGNALS, Truth, observed, produce

if TYPE_CHECKING:
    from fluxgate.signal import Signal

backend, consumer_runs = sys.argv[1], sys.argv[2] == "running"
sys.setswitchinterval(1e-4)
registry = CollectorRegistry()
# lone=False: a lone transition is applied in its call, under the same locks as with no consumer
# (see test_faults.py), so with the consumer running every call only queues.
pipeline = SignalPipeline(max_buffer_size=8, lone=False)


def circuits(prefix: str) -> dict[str, Callable[[Signal], object]]:
    return {
        f"{prefix}{i}": PrometheusListener(f"{prefix}{i}", registry, pipeline=pipeline)
        for i in range(10)
    }


class Killed(BaseException):
    pass


class Victim(threading.Thread):
    # A producer that notes the call in flight: a kill's one ambiguous signal.
    def __init__(self, send, truth):
        super().__init__(daemon=True)
        self.send, self.truth = send, truth
        self.inflight, self.calls, self.killed = None, 0, False

    def run(self):
        try:
            rng = random.Random()
            names = list(self.send)
            while True:
                name = names[rng.randrange(len(names))]
                signal = SIGNALS[rng.randrange(len(SIGNALS))]
                self.inflight = (name, signal)
                self.send[name](signal)
                self.truth.record(name, signal)
                self.calls += 1
                self.inflight = None
        except Killed:
            self.killed = True


def kill(thread):
    modified = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(Killed)
    )
    assert modified == 1


steady = [circuits(f"steady{i}_") for i in range(2)]
steady_truths = [Truth(send) for send in steady]
victims_send = [circuits(f"victim{i}_") for i in range(2)]
victim_truths = [Truth(send) for send in victims_send]
maybe = Counter()
kills = 0


async def killer():
    global kills  # noqa: PLW0603  # a script-level tally, read once anyio.run returns
    rng = random.Random(3)
    for _ in range(60):
        i = rng.randrange(2)
        victim = Victim(victims_send[i], victim_truths[i])
        victim.start()
        while victim.calls == 0:
            await checkpoint()
        for _ in range(rng.randrange(50)):
            await checkpoint()
        kill(victim)
        await anyio.to_thread.run_sync(victim.join)
        assert victim.killed
        kills += 1
        if victim.inflight is not None:
            name, s = victim.inflight
            maybe[name, s.old_state, s.new_state] += 1


async def main():
    async with anyio.create_task_group() as tg:
        if consumer_runs:
            await tg.start(pipeline.run)
        async with anyio.create_task_group() as work:
            for n, (send, truth) in enumerate(zip(steady, steady_truths, strict=True)):
                work.start_soon(anyio.to_thread.run_sync, produce, send, truth, 30_000, n)
            work.start_soon(killer)
        await pipeline.flush()
        tg.cancel_scope.cancel()
    await pipeline.flush()


anyio.run(main, backend=backend)
out: dict[str, Any] = {"kills": kills, "wrong": []}
truth = Truth([])
for each in steady_truths:
    truth.merge(each)
# Circuits whose producers were never killed: exact.
if observed(registry, truth.last) != truth.expected():
    out["wrong"].append("steady circuits differ")
# The killed producers' circuits: every completed call counts, the one in flight may or may
# not; after more signals, their gauges are exact again.
for n, send in enumerate(victims_send):
    produce(send, victim_truths[n], 1000, n)
values = samples(registry)
for each in victim_truths:
    for name, last in each.last.items():
        if shown(registry, name) != last:
            out["wrong"].append([name, shown(registry, name), last])
        for old, new in itertools.product(ALL_STATES, ALL_STATES):
            n = each.counts[name, old, new]
            labels = (("circuit_name", name), ("new_state", new), ("old_state", old))
            got = values.get(("circuit_breaker_state_transition_total", labels), 0.0)
            if not n <= got <= n + maybe[name, old, new]:
                out["wrong"].append([name, old, new, got, n])
# And the pipeline still works: no lock was left held.
after = PrometheusListener("after", registry, pipeline=pipeline)
thread = threading.Thread(target=after, args=(SIGNALS[0],))
thread.start()
thread.join(timeout=10)
out["after"] = shown(registry, "after")
print(json.dumps(out))
