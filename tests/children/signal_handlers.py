"""Signal handlers that call listeners or exit, landing inside the pipeline; nothing may be lost.

Run by ``tests/core/test_signals.py`` as ``signal_handlers.py BACKEND CASE``; prints one JSON
line: how the run ended, and the circuits that came out wrong (``[]``: none). The signals are
real (``signal.raise_signal``), raised from a target's ``fold`` hook, so that the handler runs
at a known point: Python runs a handler at the next bytecode after the signal arrives.

Cases:

* ``exit_mid_batch``: the consumer has taken a batch and is folding it when a SIGTERM handler
  calls ``sys.exit()``. The batch must still be applied (by the consumer's shutdown).
* ``handler_on_full_buffer``: the consumer runs on this (the main) thread, the buffer is full,
  and a SIGUSR1 handler calls a listener while the code it interrupted is queueing an
  overflowing signal. It must neither deadlock nor lose a signal.
* ``handler_inside_a_metric_lock``: the consumer runs on this thread and sleeps after a quiet
  spell, so a transition is lone (applied in the call), and a SIGUSR1 handler makes one while
  the code it interrupted holds one of the prometheus_client locks that write would take (as a
  scrape on the loop thread, ``make_asgi_app()``'s, holds them). Taking it again would deadlock:
  the call must queue it instead. A metric's own lock, which the write of a circuit showing a
  state does not take (on a registry whose metrics fluxgate-stream created, it goes through the
  children it keeps), leaves the transition lone; but not a command's transition never counted
  before (``closed -> forced_open``), whose counter child is looked up with ``labels()``.
  Reported per lock: (applied in the call, counted at the end).
"""

import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import anyio
from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry

from fluxgate_stream import PrometheusListener, QueueingListener, SignalPipeline
from fluxgate_stream._apply import Pending
from fluxgate_stream._circuits import Circuit
from tests.support.helpers import wait_until
from tests.support.truth import Truth, observed, produce

backend, case = sys.argv[1], sys.argv[2]
OPEN = Signal("closed", "open", 0.0)
FORCE = Signal("closed", "forced_open", 0.0)


class Tripwire:
    """A target whose ``fold`` hook raises ``signum`` the first time a signal is folded for it."""

    name = "tripwire"
    closed_seq = -1

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.armed = True
        self.folded = 0
        self.written = 0

    @property
    def fold(self) -> Any:
        return self._fold

    def _fold(self, pending: Pending, seq: int, signal_: Signal) -> None:  # noqa: ARG002  # as Tally calls it
        self.folded += 1
        if self.armed:
            self.armed = False
            signal.raise_signal(self.signum)  # the handler runs right after this call

    def write(self, pending: Pending) -> None:  # noqa: ARG002  # the Target protocol's name
        self.written += 1


class TripListener(QueueingListener):
    __slots__ = ()

    def __init__(self, pipeline: SignalPipeline, target: Tripwire) -> None:
        self._pipeline = pipeline
        self._target = target


def ended(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)
    if inner is None:
        return type(exc).__name__
    return "+".join(sorted({ended(e) for e in inner}))


registry = CollectorRegistry()
out: dict[str, Any] = {}


def setup(
    max_buffer_size: int, n: int, signum: int
) -> tuple[SignalPipeline, dict[str, Callable[[Signal], object]], Truth, Tripwire, TripListener]:
    """A pipeline, ``n`` circuits and their truth, and a tripwire that raises ``signum``."""
    pipeline = SignalPipeline(max_buffer_size=max_buffer_size)
    send: dict[str, Callable[[Signal], object]] = {
        f"c{i}": PrometheusListener(f"c{i}", registry, pipeline=pipeline) for i in range(n)
    }
    tripwire = Tripwire(signum)
    return pipeline, send, Truth(send), tripwire, TripListener(pipeline, tripwire)


if case == "exit_mid_batch":
    pipeline, send, truth, tripwire, trip = setup(1024, 20, signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            while not pipeline._state.sleeping:
                await anyio.lowlevel.checkpoint()
            produce(send, truth, 400, 1)  # one batch: these, the tripwire's signal, and more
            trip(OPEN)
            produce(send, truth, 400, 2)
            await pipeline.flush()  # the consumer exits in its batch: its shutdown releases us
            await anyio.sleep_forever()  # sleep-ok: the SystemExit ends the run

elif case == "handler_on_full_buffer":
    pipeline, send, truth, tripwire, trip = setup(4, 5, signal.SIGUSR1)
    from_handler = Truth(["h"])
    handled = PrometheusListener("h", registry, pipeline=pipeline)

    def on_usr1(*_args: object) -> None:
        for _ in range(10):
            handled(OPEN)
            from_handler.record("h", OPEN)

    signal.signal(signal.SIGUSR1, on_usr1)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            produce(send, truth, 10, 1)  # fills the stream: the rest overflows
            trip(OPEN)  # overflowing: its fold hook raises SIGUSR1 wherever it is folded
            produce(send, truth, 10, 2)
            await pipeline.flush()
            produce(send, truth, 100, 3)
            await pipeline.flush()
            tg.cancel_scope.cancel()

elif case == "handler_inside_a_metric_lock":
    pipeline = SignalPipeline()  # default settings: lone transitions are applied in the call
    truth = Truth([])
    tripwire = Tripwire(signal.SIGUSR1)
    tripwire.armed = False
    listeners = {
        name: PrometheusListener(name, registry, pipeline=pipeline)
        for name in (
            "none",
            "gauge",
            "gauge value",
            "gauge value, shown",
            "counter",
            "counter value",
            "counter, uncounted",
        )
    }
    # No state shown (initial_state=None): the first write looks its children up, through
    # labels(), which takes the metric's lock.
    for name in ("gauge, unshown", "counter, unshown"):
        listeners[name] = PrometheusListener(name, registry, pipeline=pipeline, initial_state=None)
    target = {name: cast("Circuit", listener._target) for name, listener in listeners.items()}
    gauge_value: Any = target["gauge value"].gauge.labels("gauge value", "open")._value
    shown_value: Any = target["gauge value, shown"].gauge.labels("gauge value, shown", "closed")
    counter_value: Any = target["counter value"].counter.labels("counter value", "closed", "open")
    locks: dict[str, Any] = {
        "none": None,  # the control: no lock held, so the handler's transition is lone
        "gauge": target["gauge"].gauge._lock,
        "gauge value": gauge_value._lock,  # a single-process value's own lock: the new state's
        "gauge value, shown": shown_value._value._lock,  # the state shown's, which goes to 0
        "counter": target["counter"].counter._lock,
        "counter value": counter_value._value._lock,
        # A command's transition, never counted yet: its first write looks its counter child up.
        "counter, uncounted": target["counter, uncounted"].counter._lock,
        "gauge, unshown": target["gauge, unshown"].gauge._lock,
        "counter, unshown": target["counter, unshown"].counter._lock,
    }
    # The transition each case's handler makes: OPEN but where a case names another.
    signals = {"counter, uncounted": FORCE}
    current: list[str] = []

    def on_usr1(*_args: object) -> None:
        listeners[current[0]](signals.get(current[0], OPEN))

    signal.signal(signal.SIGUSR1, on_usr1)
    out["cases"] = {}

    async def main() -> None:
        state = pipeline._state
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            for name, lock in locks.items():
                await pipeline.flush()
                await wait_until(lambda: state.sleeping and time.monotonic() >= state.quiet_at)
                direct = pipeline.stats()["direct"]
                current[:] = [name]
                if lock is None:
                    signal.raise_signal(signal.SIGUSR1)
                else:
                    with lock:
                        signal.raise_signal(signal.SIGUSR1)  # the handler runs in here
                applied = pipeline.stats()["direct"] - direct
                await pipeline.flush()
                made = signals.get(name, OPEN)
                counted = registry.get_sample_value(
                    "circuit_breaker_state_transition_total",
                    {
                        "circuit_name": name,
                        "old_state": made.old_state,
                        "new_state": made.new_state,
                    },
                )
                out["cases"][name] = [applied, counted]
            tg.cancel_scope.cancel()

else:
    raise SystemExit(f"unknown case {case}")

try:
    anyio.run(main, backend=backend)
    out["ended"] = "returned"
except BaseException as exc:  # noqa: BLE001  # reported: the test checks how it ended
    out["ended"] = ended(exc)
if case == "handler_on_full_buffer":
    truth.merge(from_handler)
got = observed(registry, truth.last)
want = truth.expected()
out["wrong"] = sorted(str(k) for k in set(got) | set(want) if got.get(k) != want.get(k))[:5]
out["tripwire"] = [tripwire.folded, tripwire.written]
out["queued"] = pipeline.stats()["queued"]
out["running"] = pipeline.running
print(json.dumps(out))
