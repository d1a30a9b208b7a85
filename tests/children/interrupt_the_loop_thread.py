"""Real SIGINTs delivered to the loop thread while it produces and consumes; no circuit corrupted.

Run by ``tests/core/test_faults.py`` as ``interrupt_the_loop_thread.py BACKEND ROUNDS [SIGNAL]``;
prints one JSON line: how many rounds were interrupted, and the circuits that came out wrong.
Each burst also makes metered calls on the loop thread (through the meter's ``CallQueue``): the
calls counted (every kind: an interrupted call counts as ``cancelled``) come out as made, give or
take the calls the interruption cut short, else they are reported under ``calls``.
With ``SIGNAL`` ``sigterm`` (asyncio only: under trio, an exception raised by a handler inside
trio's scheduler is a ``TrioInternalError``), the signal is a SIGTERM whose handler calls
``sys.exit()`` (the common idiom), so the interruption is a ``SystemExit`` wherever the main
thread is, except inside asyncio's own event-loop code (see ``on_sigterm``). Then the counters
that came out higher than sent are reported apart, as ``extra``: a ``SystemExit`` that lands
inside a prometheus_client increment, after it counted, is counted again when the consumer's
shutdown finishes the write (the one window the pipeline leaves; at most one series per signal).
"""

import asyncio
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
from anyio.lowlevel import checkpoint
from fluxgate import CircuitBreaker
from prometheus_client import CollectorRegistry

from fluxgate_stream import PrometheusListener, SignalPipeline, meter_calls
from tests.support.truth import SIGNALS

backend, rounds = sys.argv[1], int(sys.argv[2])
sigterm = sys.argv[3:] == ["sigterm"]
SIGNUM = signal.SIGTERM if sigterm else signal.SIGINT
INTERRUPT: type[BaseException] = SystemExit if sigterm else KeyboardInterrupt
raised: list[bool] = []  # set by the handler when it raised: the interrupter stops sending
# asyncio's own event-loop code is not safe against an exception raised by a signal handler: one
# that lands between a task's wake-up and its scheduling (``call_soon`` called from the C task
# code, say) loses that wake-up, and ``asyncio.run`` then hangs for ever in its shutdown, waiting
# on a task nobody will step. asyncio alone does this (a loop of ``sleep(0)`` tasks, no
# fluxgate-stream, hangs within a few hundred rounds), so it is not what this child tests: there,
# the handler declines and the interrupter thread sends the signal again. Everywhere else (the
# test's code, ours, prometheus_client's, anyio's) it raises.
ASYNCIO = str(Path(asyncio.__file__).parent) + os.sep


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    if frame is not None and frame.f_code.co_filename.startswith(ASYNCIO):
        return
    raised.append(True)
    sys.exit(1)


if sigterm:
    signal.signal(signal.SIGTERM, on_sigterm)
rng = random.Random(7)
registry = CollectorRegistry()
pipeline = SignalPipeline(max_buffer_size=64)
names = [f"c{i}" for i in range(30)]
listeners = {name: PrometheusListener(name, registry, pipeline=pipeline) for name in names}
breaker = CircuitBreaker()
meter_calls(breaker, "metered", registry, pipeline=pipeline)
calls_made = Counter()  # ["calls"]: the metered calls that returned
calls_cut = 0  # calls an interruption cut short: each may or may not count
calling = []


def ok() -> None:
    pass


sent = Counter()
last: dict[str, str | None] = dict.fromkeys(names, "closed")
maybe = Counter()  # signals whose call was interrupted: they may or may not count
inflight = []


def interrupt_after(batches, as_taken):
    # Spin (this is another thread) until the consumer applied a few more batches, then deliver
    # a real SIGINT: the main thread takes it wherever it happens to be. With ``as_taken``, wait
    # further for the consumer to take a batch off the stream: with a tiny switch interval, the
    # interrupt then lands while that batch is being applied.
    while pipeline.stats()["batches"] < batches:
        pass
    taken = pipeline._state.taken_from_stream
    while as_taken and pipeline._state.taken_from_stream == taken:
        pass
    del raised[:]
    os.kill(os.getpid(), SIGNUM)
    while sigterm and not raised:
        # The handler declined (it landed in asyncio's own code): send again, a little later.
        time.sleep(0.001)  # sleep-ok: a pause between re-sends, not a synchronisation
        if not raised:
            os.kill(os.getpid(), SIGNUM)


async def main():
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        while True:
            for _ in range(rng.randrange(1, 1000)):
                name = names[rng.randrange(len(names))]
                sig = SIGNALS[rng.randrange(len(SIGNALS))]
                inflight.append((name, sig))
                listeners[name](sig)
                sent[name, sig.old_state, sig.new_state] += 1
                last[name] = sig.new_state
                inflight.pop()
            for _ in range(rng.randrange(1, 100)):
                calling.append(True)
                breaker.call(ok)
                calls_made["calls"] += 1
                calling.pop()
            await checkpoint()


def only_interrupts(exc):
    # The interrupt, possibly wrapped by task groups in (nested) exception groups.
    inner = getattr(exc, "exceptions", None)
    if inner is None:
        # A SystemExit landing in anyio's own cancel-scope bookkeeping comes out as this.
        scopes = sigterm and isinstance(exc, RuntimeError) and "cancel scope" in str(exc)
        return isinstance(exc, INTERRUPT) or scopes
    return all(only_interrupts(e) for e in inner)


interrupted = 0
sys.setswitchinterval(1e-5)
for round in range(rounds):
    target = pipeline.stats()["batches"] + rng.randrange(1, 40)
    thread = threading.Thread(target=interrupt_after, args=(target, round % 2 == 0))
    thread.start()
    try:
        anyio.run(main, backend=backend)
    except BaseException as exc:
        if not only_interrupts(exc):
            raise
        interrupted += 1
    thread.join()
    for name, sig in inflight:
        maybe[name, sig.old_state, sig.new_state] += 1
        last[name] = None  # unknown until its next signal
    inflight.clear()
    calls_cut += len(calling)
    calling.clear()
    assert not pipeline.running
    assert pipeline.stats()["queued"] == 0
    assert not pipeline._state.overflowing

values = {}
for family in registry.collect():
    for sample in family.samples:
        if not sample.name.endswith("_created"):
            values[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
out: dict[str, Any] = {"interrupted": interrupted, "wrong": []}
extra = []
states = ("closed", "open", "half_open", "metrics_only", "disabled", "forced_open")
for name in names:
    for old in states:
        for new in states:
            labels = (("circuit_name", name), ("new_state", new), ("old_state", old))
            got = values.get(("circuit_breaker_state_transition_total", labels), 0.0)
            want = sent[name, old, new]
            if sigterm and got > want + maybe[name, old, new]:
                extra.append([name, old, new, got, want])
            elif not want <= got <= want + maybe[name, old, new]:
                out["wrong"].append([name, old, new, got, want])
    gauge = {
        s: values[("circuit_breaker_state", (("circuit_name", name), ("state", s)))] for s in states
    }
    # gauge[last[name]] is read only when not None: pyright does not narrow last[name] by name.
    if (
        last[name] is not None and gauge[last[name]] != 1.0  # pyright: ignore[reportArgumentType]
    ) or sum(gauge.values()) != 1.0:
        out["wrong"].append([name, gauge, last[name]])
out["wrong"] = [len(out["wrong"]), *out["wrong"][:5]] if out["wrong"] else []
counted = sum(
    value
    for (sample, labels), value in values.items()
    if sample == "circuit_breaker_calls_total" and ("circuit_name", "metered") in labels
)
if not calls_made["calls"] <= counted <= calls_made["calls"] + calls_cut:
    out["calls"] = [counted, calls_made["calls"], calls_cut]
if sigterm:
    out["extra"] = len(extra)
print(json.dumps(out))
