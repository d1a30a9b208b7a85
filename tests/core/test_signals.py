"""Signal handlers, process exit and interrupts landing inside the pipeline.

Real signals (``signal.raise_signal``), raised at a known point: Python runs a handler at the next
bytecode after the signal arrives, so raising it from inside a metric write or a target's hook
interrupts exactly there. Cases that would end the test process (a ``SystemExit`` escaping the
event loop) or hang it (a deadlock, on the code before the fix) run in a child interpreter.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import anyio
import pytest
from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry

from fluxgate_stream import PrometheusListener, SignalPipeline, StreamingListener
from fluxgate_stream import _queue as queue_module
from fluxgate_stream import listener as listener_module
from fluxgate_stream import pipeline as pipeline_module

from ..support.helpers import wait_until
from ..support.metrics import count, shown
from ..support.processes import CHILDREN, importing_tests, run_python

OPEN = Signal("closed", "open", 0.0)
HALF_OPEN = Signal("open", "half_open", 0.0)
CLOSE = Signal("half_open", "closed", 0.0)


class Interrupting:
    """A gauge series' value that raises a real signal inside its first ``set()``, then sets it."""

    def __init__(self, real: object) -> None:
        self.real = real
        self._lock = real._lock  # type: ignore[attr-defined]  # the real value's: a lone write's lock check reads it
        self.fired = 0

    def set(self, value: float) -> None:
        if not self.fired:
            self.fired += 1
            signal.raise_signal(signal.SIGUSR1)  # the handler runs right after this call
        self.real.set(value)  # type: ignore[attr-defined]  # a prometheus_client value


@pytest.fixture
def on_usr1():
    """Install a SIGUSR1 handler for the test (``on_usr1.append(fn)``); restore the old one."""
    handlers: list[object] = []

    def handler(_signum: int, _frame: object) -> None:
        for each in handlers:
            each()  # type: ignore[operator]

    previous = signal.signal(signal.SIGUSR1, handler)
    yield handlers
    signal.signal(signal.SIGUSR1, previous)


@contextmanager
def interrupted_gauge(
    listener: PrometheusListener, on_usr1: list[object], handler: object = None
) -> Iterator[Interrupting]:
    """While in the block, the first write to the listener's ``closed`` series raises SIGUSR1,
    whose handler sends the listener ``HALF_OPEN`` (or calls ``handler``, if given)."""
    gauges = listener._target._gauges  # type: ignore[attr-defined]  # the values of its children, kept
    real = gauges["closed"]
    interrupting = Interrupting(real)
    on_usr1.append(handler or (lambda: listener(HALF_OPEN)))
    gauges["closed"] = interrupting
    try:
        yield interrupting
    finally:
        gauges["closed"] = real


def test_a_listener_called_by_a_signal_handler_mid_write_does_not_re_enter_it(
    registry: CollectorRegistry, on_usr1
):
    # No consumer: the call applies directly, under the apply lock. The handler interrupts the
    # gauge write (between its two series) and calls the listener again: applying there and then
    # would leave the gauge with two states at 1, which later transitions never repair.
    pipeline = SignalPipeline()
    listener = PrometheusListener("sig", registry, pipeline=pipeline)
    with interrupted_gauge(listener, on_usr1) as interrupting:
        listener(OPEN)
    assert interrupting.fired == 1
    assert shown(registry, "sig") == "half_open"  # exactly one state at 1: the latest
    listener(CLOSE)
    assert shown(registry, "sig") == "closed"
    assert count(registry, "sig", "closed", "open") == 1.0
    assert count(registry, "sig", "open", "half_open") == 1.0
    assert count(registry, "sig", "half_open", "closed") == 1.0
    assert pipeline.stats()["direct"] == 3


@pytest.mark.anyio
async def test_a_listener_called_by_a_signal_handler_while_the_consumer_stops_is_applied_after(
    anyio_backend, registry: CollectorRegistry, on_usr1
):
    # The consumer's shutdown applies what was queued, under the apply lock, with the circuit's
    # gauge write interrupted by a handler that calls the listener: the call must wait its turn.
    pipeline = SignalPipeline()
    listener = PrometheusListener("stop", registry, pipeline=pipeline)
    with interrupted_gauge(listener, on_usr1) as interrupting:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            await wait_until(lambda: pipeline._state.sleeping)
            listener(OPEN)
            tg.cancel_scope.cancel()  # before the consumer ran: its shutdown applies OPEN
    assert interrupting.fired == 1
    assert shown(registry, "stop") == "half_open"
    assert count(registry, "stop", "open", "half_open") == 1.0
    assert not pipeline.running


@pytest.mark.anyio
async def test_a_signal_handlers_send_just_before_the_consumer_waits_is_not_left_waiting(
    anyio_backend, registry: CollectorRegistry, on_usr1, monkeypatch: pytest.MonkeyPatch
):
    # The consumer looks at the stream, then registers its wait: a handler that runs in between
    # (here: while the consumer makes its wait's event) sends when no receiver waits yet, so
    # its signal goes to the buffer. The wait must then return, not sleep beside it (nor assert).
    pipeline = SignalPipeline(lone=False)  # the handler's signal is queued, never applied in it
    listener = PrometheusListener("window", registry, pipeline=pipeline)
    on_usr1.append(lambda: listener(OPEN))
    real_event_class = pipeline_module.event_class
    raised: list[int] = []

    def interrupting_event_class() -> type[anyio.Event]:
        make_event = real_event_class()

        def make() -> anyio.Event:
            if not raised:
                raised.append(1)
                signal.raise_signal(signal.SIGUSR1)  # the handler runs right after this call
            return make_event()

        return make  # type: ignore[return-value]  # a factory in the Event class's place

    monkeypatch.setattr(pipeline_module, "event_class", interrupting_event_class)
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        await wait_until(lambda: count(registry, "window", "closed", "open") == 1.0)  # no flush
        assert raised == [1]
        assert pipeline.running
        tg.cancel_scope.cancel()
    assert shown(registry, "window") == "open"


class InterruptingSequence:
    """The sequence numbers, raising SIGUSR1 right after drawing the next one while ``armed``."""

    def __init__(self, real: Iterator[int]) -> None:
        self.real = real
        self.armed = False

    def __next__(self) -> int:
        number = next(self.real)
        if self.armed:
            self.armed = False
            signal.raise_signal(signal.SIGUSR1)  # the handler runs right after this call
        return number


Interrupt = Callable[
    [tuple[object, str], Signal, Callable[[PrometheusListener], object]], Awaitable[None]
]


@pytest.fixture
def interrupt(registry: CollectorRegistry, on_usr1, monkeypatch: pytest.MonkeyPatch) -> Interrupt:
    """``await interrupt(numbers, handler_sends, call)``: listener ``interrupted``'s ``call`` on
    the loop thread, the consumer asleep, and SIGUSR1 raised as the call draws its sequence
    number from ``numbers`` (a module and the name it reads them by), whose handler sends the
    listener ``handler_sends``; then ``flush()``: the consumer applied both calls' items, queued,
    in one batch."""

    async def run(
        numbers: tuple[object, str],
        handler_sends: Signal,
        call: Callable[[PrometheusListener], object],
    ) -> None:
        pipeline = SignalPipeline(lone=False, batch_window=0)
        listener = PrometheusListener("interrupted", registry, pipeline=pipeline)
        module, name = numbers
        sequence = InterruptingSequence(getattr(module, name))
        monkeypatch.setattr(module, name, sequence)
        on_usr1.append(lambda: listener(handler_sends))
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            await wait_until(lambda: pipeline._state.sleeping)
            sequence.armed = True
            call(listener)
            assert not sequence.armed
            await pipeline.flush()
            tg.cancel_scope.cancel()

    return run


@pytest.mark.anyio
async def test_a_signal_handlers_transition_queued_ahead_of_an_older_one_is_the_state_shown(
    anyio_backend, registry: CollectorRegistry, interrupt: Interrupt
):
    # The loop thread's call draws its sequence number; a handler that lands before its send
    # calls the listener, whose newer transition goes onto the stream first. The consumer takes
    # the two as one batch from the stream alone, out of sequence order: the gauge must show the
    # newer state, as the breaker does (unsorted, a bulk fold that took the batch's last item as
    # the newest showed "open").
    await interrupt((listener_module, "SEQUENCE"), HALF_OPEN, lambda listener: listener(OPEN))
    assert shown(registry, "interrupted") == "half_open"
    assert count(registry, "interrupted", "closed", "open") == 1.0
    assert count(registry, "interrupted", "open", "half_open") == 1.0


@pytest.mark.anyio
async def test_a_signal_handlers_transition_newer_than_the_close_it_interrupted_is_kept(
    anyio_backend, registry: CollectorRegistry, interrupt: Interrupt
):
    # close() draws its number; a handler that lands before its send transitions the circuit,
    # newer, and queued ahead of it. Both in one batch, sorted: the close comes first, and the
    # newer transition brings the series back (as it would had it come after the close). When
    # the handler's call is lone instead (applied in it), the queued close drops it: the two
    # overlap in time, and either order is theirs (docs/guarantees.md).
    await interrupt((queue_module, "_SEQ"), OPEN, PrometheusListener.close)
    assert shown(registry, "interrupted") == "open"
    assert count(registry, "interrupted", "closed", "open") == 1.0


def run_case(backend: str, case: str) -> object:
    result = run_python(
        CHILDREN / "signal_handlers.py", backend, case, timeout=30, env=importing_tests()
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sys_exit_from_a_sigterm_handler_mid_batch_loses_nothing_taken(backend):
    assert run_case(backend, "exit_mid_batch") == {
        "ended": "SystemExit",
        "wrong": [],
        "tripwire": [2, 1],  # folded again by the shutdown, which applied the whole batch
        "queued": 0,
        "running": False,
    }


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_signal_handler_calling_a_listener_on_a_full_buffer_neither_deadlocks_nor_loses(backend):
    assert run_case(backend, "handler_on_full_buffer") == {
        "ended": "returned",
        "wrong": [],
        "tripwire": [1, 1],
        "queued": 0,
        "running": False,
    }


def _scrape_collector(registry: CollectorRegistry) -> object:
    """The time-in-state collector of ``registry``: the scrape that holds the apply lock."""
    from fluxgate_stream.time_in_state import StateSecondsCollector  # noqa: PLC0415  # one test

    found = [c for c in registry._collector_to_names if isinstance(c, StateSecondsCollector)]  # type: ignore[attr-defined]
    assert len(found) == 1
    return found[0]


def test_a_listener_called_by_a_signal_handler_during_a_scrape_is_applied_when_it_ends(
    registry: CollectorRegistry, on_usr1
):
    # No consumer. A scrape of the time in state holds the apply lock while it reads the clocks;
    # a handler that lands there calls the listener, whose apply is deferred. Nothing else is
    # coming (no further transition, no flush): the scrape itself must apply it as it ends, or
    # the gauge shows the old state for ever.
    pipeline = SignalPipeline()
    listener = PrometheusListener("scraped", registry, pipeline=pipeline, time_in_state=True)
    collector = _scrape_collector(registry)
    clock = collector._now  # type: ignore[attr-defined]
    fired: list[float] = []

    def interrupting_clock() -> float:
        if not fired:
            fired.append(clock())
            signal.raise_signal(signal.SIGUSR1)  # the handler runs right after this call
        return clock()

    on_usr1.append(lambda: listener(OPEN))
    collector._now = interrupting_clock  # type: ignore[attr-defined]
    list(registry.collect())  # the scrape
    assert fired
    assert shown(registry, "scraped") == "open"
    assert count(registry, "scraped", "closed", "open") == 1.0


class InterruptingRegistry(CollectorRegistry):
    """A registry whose ``register()`` raises SIGUSR1 once: a listener's set-up, interrupted."""

    armed = False

    def register(self, collector: object) -> None:
        if self.armed:
            self.armed = False
            signal.raise_signal(signal.SIGUSR1)  # the handler runs right after this call
        super().register(collector)  # type: ignore[arg-type]


def test_a_listener_called_by_a_signal_handler_while_another_is_created_is_applied(on_usr1):
    # No consumer. Creating a listener registers its metrics with the apply lock held; a handler
    # that lands there calls an existing listener (of another registry): deferred, it must be
    # applied once the creation is done, not at some later listener call that may never come.
    pipeline = SignalPipeline()
    first = CollectorRegistry()
    listener = PrometheusListener("first", first, pipeline=pipeline)
    second = InterruptingRegistry()
    on_usr1.append(lambda: listener(OPEN))
    second.armed = True
    PrometheusListener("second", second, pipeline=pipeline)
    assert not second.armed
    assert shown(first, "first") == "open"


@pytest.mark.parametrize("mode", ["single", "multiprocess"])
def test_a_listener_called_by_a_signal_handler_during_a_fork_is_applied_as_the_fork_ends(
    mode, tmp_path
):
    # The fork holds the apply lock across its hooks; a handler that runs there has its call
    # deferred, and the parent's fork hooks must apply it: nothing else may ever come.
    env = dict(importing_tests())
    if mode == "multiprocess":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    result = run_python(CHILDREN / "signal_during_fork.py", timeout=30, env=env)
    assert json.loads(result.stdout) == {"fired": True, "open": 1.0}


@pytest.mark.anyio
async def test_a_handler_mid_batch_calling_another_pipelines_listener_is_applied(
    anyio_backend, registry: CollectorRegistry, on_usr1
):
    # The consumer of one pipeline writes a batch (apply lock held) when a handler calls a
    # listener of another pipeline, which has no consumer: deferred, it must be applied as the
    # batch ends, not at some later call that may never come.
    pipeline, other = SignalPipeline(), SignalPipeline()
    listener = PrometheusListener("batch", registry, pipeline=pipeline)
    elsewhere = CollectorRegistry()
    bystander = PrometheusListener("bystander", elsewhere, pipeline=other)
    with interrupted_gauge(listener, on_usr1, lambda: bystander(OPEN)) as interrupting:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            listener(OPEN)
            await pipeline.flush()  # the batch, interrupted; nothing else happens after it
            assert interrupting.fired == 1
            assert shown(registry, "batch") == "open"
            assert shown(elsewhere, "bystander") == "open"
            tg.cancel_scope.cancel()


class Forwarding:
    """A sink that forwards each record to ``listener`` as ``rounds`` trips and recoveries."""

    def __init__(self, listener: PrometheusListener, rounds: int) -> None:
        self.listener = listener
        self.rounds = rounds

    def write(self, transitions: object) -> None:  # noqa: ARG002  # the SignalSink protocol's name
        for _ in range(self.rounds):
            self.listener(OPEN)
            self.listener(Signal("open", "closed", 0.0))


def test_many_calls_deferred_by_a_sink_are_all_applied_without_recursing(registry):
    # A sink runs with the apply lock held; the listener calls it makes (no consumer) are
    # deferred, 3000 of them, and run as the write ends. Each one's apply runs what is deferred
    # after it: nested, that recursed once per call, past the interpreter's limit.
    forwarded = PrometheusListener("forwarded", registry, pipeline=SignalPipeline())
    source = StreamingListener("source", Forwarding(forwarded, 1500), pipeline=SignalPipeline())
    source(OPEN)
    assert count(registry, "forwarded", "closed", "open") == 1500.0
    assert count(registry, "forwarded", "open", "closed") == 1500.0
    assert shown(registry, "forwarded") == "closed"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_handler_interrupting_a_metric_lock_queues_its_lone_transition(backend):
    result = run_case(backend, "handler_inside_a_metric_lock")
    assert result["cases"] == {
        "none": [1, 1.0],  # lone: applied in the handler's call
        # A lock the write would take, held: queued, applied by the consumer.
        "gauge value": [0, 1.0],  # the new state's child
        "gauge value, shown": [0, 1.0],  # the child of the state shown, set to 0
        "counter value": [0, 1.0],
        "gauge, unshown": [0, 1.0],  # its first write calls labels(), which takes this one
        "counter, unshown": [0, 1.0],
        "counter, uncounted": [0, 1.0],  # closed -> forced_open: labels() finds its child
        # A metric's lock, which the write of a circuit showing a state does not take: applied
        # in the call, without waiting for it (the call would hang otherwise).
        "gauge": [1, 1.0],
        "counter": [1, 1.0],
    }
    assert (result["ended"], result["wrong"], result["running"]) == ("returned", [], False)
