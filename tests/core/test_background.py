"""``ConsumerThread``: the consumer on a background thread's event loop, for threaded apps."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from functools import partial

import anyio
import anyio.to_thread
import pytest
from fluxgate import CircuitBreaker
from fluxgate.signal import Signal

from fluxgate_stream import ConsumerThread, PrometheusListener, SignalPipeline, export_metrics

from ..support.metrics import count, shown
from ..support.processes import CHILDREN, run_python

BACKENDS = ["asyncio", "trio"]
TRIP = Signal("closed", "open", 0.0)
RECOVER = Signal("open", "closed", 0.0)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def produce(listener: PrometheusListener, rounds: int) -> None:
    for _ in range(rounds):
        listener(TRIP)
        listener(RECOVER)
    listener(TRIP)


def in_threads(target, n: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_start_returns_with_the_consumer_running_and_flush_applies_from_a_thread(registry, backend):
    # A long batch window: without flush() cutting it short, nothing would be applied yet; and no
    # lone transitions (applied in the call): the signal must come over the bridge.
    pipeline = SignalPipeline(batch_window=60.0, lone=False)
    cb = CircuitBreaker(listeners=[PrometheusListener("api", registry, pipeline=pipeline)])
    consumer = ConsumerThread(pipeline, backend=backend).start()
    try:
        assert consumer.running
        assert pipeline.running
        assert consumer.backend == backend
        assert consumer.pipeline is pipeline
        assert repr(consumer) == f"<ConsumerThread {backend} running pipeline={pipeline!r}>"
        cb.force_open()  # the first signal is queued already: start() returned with it running
        assert pipeline.stats()["direct"] == 0
        consumer.flush(timeout=10)
        assert shown(registry, "api") == "forced_open"
        assert pipeline.stats()["bridge"] == 1  # it came over the thread bridge
    finally:
        consumer.stop()
    assert not consumer.running
    assert not pipeline.running


def test_stop_applies_everything_queued_by_many_threads(registry, backend):
    pipeline = SignalPipeline(max_buffer_size=64, batch_window=60.0, lone=False)
    listeners = [PrometheusListener(f"c{i}", registry, pipeline=pipeline) for i in range(4)]
    with ConsumerThread(pipeline, backend=backend):
        threads = [threading.Thread(target=produce, args=(each, 500)) for each in listeners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # No flush: stop() alone applied all of it, whichever path each signal took.
    for each in listeners:
        assert count(registry, each.name, "closed", "open") == 501.0
        assert count(registry, each.name, "open", "closed") == 500.0
        assert shown(registry, each.name) == "open"
    stats = pipeline.stats()
    assert stats["bridge"] + stats["overflow"] == 4 * 1001
    assert stats["direct"] == 0


def test_listener_calls_after_stop_apply_directly(registry, backend):
    pipeline = SignalPipeline()
    listener = PrometheusListener("after", registry, pipeline=pipeline)
    ConsumerThread(pipeline, backend=backend).start().stop()
    listener(TRIP)
    assert shown(registry, "after") == "open"
    assert pipeline.stats()["direct"] == 1


def test_a_consumer_thread_runs_once_and_says_so():
    consumer = ConsumerThread(SignalPipeline())
    with pytest.raises(
        RuntimeError, match=r"^ConsumerThread\.stop\(\) was called before start\(\)$"
    ):
        consumer.stop()
    consumer.flush()  # no consumer: nothing is queued, it returns at once
    consumer.start()
    with pytest.raises(RuntimeError, match="already started \\(it is running\\); a ConsumerThread"):
        consumer.start()
    consumer.stop()
    consumer.stop()  # idempotent
    consumer.flush()  # stopped: stopping applied everything
    with pytest.raises(RuntimeError, match="already started \\(it is stopped\\)"):
        consumer.start()


def test_a_pipeline_whose_consumer_runs_elsewhere_is_refused(registry):
    pipeline = SignalPipeline()
    listener = PrometheusListener("one_consumer", registry, pipeline=pipeline)
    with ConsumerThread(pipeline) as first:
        second = ConsumerThread(pipeline)
        message = "this SignalPipeline's consumer is already running elsewhere"
        with pytest.raises(RuntimeError, match=f"^{re.escape(message)}"):
            second.start()
        assert first.running  # untouched
        with pytest.raises(RuntimeError, match="was called before start"):
            second.stop()  # the refused one never started
        listener(TRIP)
        first.flush()
        assert shown(registry, "one_consumer") == "open"


def test_a_task_group_consumer_counts_as_running_elsewhere():
    pipeline = SignalPipeline()

    async def main() -> None:
        async with anyio.create_task_group() as group:
            await group.start(pipeline.run)
            with pytest.raises(RuntimeError, match="already running elsewhere"):
                await anyio.to_thread.run_sync(ConsumerThread(pipeline).start)
            group.cancel_scope.cancel()

    anyio.run(main)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"backend": "uvloop"}, ValueError, "backend must be one of asyncio, trio, got 'uvloop'"),
        ({"backend": None}, TypeError, "backend must be a str, got NoneType"),
        ({"pipeline": "default"}, TypeError, "pipeline must be a SignalPipeline, got str"),
    ],
)
def test_bad_arguments_are_refused_at_the_call_site(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        ConsumerThread(**kwargs)


class Claims(str):
    """A str that equals anything: what the check compares and keeps must be its characters."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


def test_a_str_subclass_backend_is_read_as_its_characters():
    with pytest.raises(ValueError, match=r"^backend must be one of asyncio, trio, got 'uvloop'$"):
        ConsumerThread(SignalPipeline(), backend=Claims("uvloop"))  # type: ignore[arg-type]
    consumer = ConsumerThread(SignalPipeline(), backend=Claims("trio"))  # type: ignore[arg-type]
    assert type(consumer.backend) is str
    assert consumer.backend == "trio"


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (-1, ValueError, "timeout must be positive, got -1"),
        ("1", TypeError, "timeout must be a number of seconds, got str"),
    ],
)
def test_bad_timeouts_are_refused(timeout, error, message):
    consumer = ConsumerThread(SignalPipeline())
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        consumer.stop(timeout)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        consumer.flush(timeout)


@pytest.mark.parametrize("timeout", [math.inf, 1e300, 2**70], ids=["inf", "huge", "huge-int"])
def test_a_timeout_longer_than_threads_can_wait_waits_as_long_as_it_takes(registry, timeout):
    # threading's waits raise OverflowError past threading.TIMEOUT_MAX; stop() had already
    # cancelled the consumer by then, and raised neither TypeError nor ValueError.
    pipeline = SignalPipeline()
    listener = PrometheusListener("patient", registry, pipeline=pipeline)
    consumer = ConsumerThread(pipeline).start()
    listener(TRIP)
    consumer.flush(timeout)
    consumer.stop(timeout)
    assert not consumer.running
    assert shown(registry, "patient") == "open"


def test_start_soon_runs_a_task_on_the_loop_until_stop(backend):
    pipeline = SignalPipeline()
    started = threading.Event()
    cancelled = threading.Event()
    threads: list[int] = []

    async def task() -> None:
        threads.append(threading.get_ident())
        started.set()
        try:
            await anyio.sleep_forever()  # sleep-ok: until the stop cancels it
        finally:
            cancelled.set()

    consumer = ConsumerThread(pipeline, backend=backend)
    with pytest.raises(RuntimeError, match=r"start_soon\(\) needs a running consumer"):
        consumer.start_soon(task)
    with consumer:
        consumer.start_soon(task)
        assert started.wait(10)
        assert not cancelled.is_set()
    assert cancelled.is_set()  # stop() cancelled it with the consumer
    assert threads != [threading.get_ident()]


def test_the_self_metrics_publisher_runs_on_the_same_loop(registry):
    # export_metrics() needs no task in one process; in multiprocess mode its run() is one.
    pipeline = SignalPipeline()
    metrics = export_metrics(pipeline, registry, name="wsgi")
    with ConsumerThread(pipeline) as consumer:
        consumer.start_soon(partial(metrics.run, interval=60.0))
        labels = {"pipeline": "wsgi"}
        assert registry.get_sample_value("fluxgate_stream_consumer_running", labels) == 1.0
    assert registry.get_sample_value("fluxgate_stream_consumer_running", labels) == 0.0


def test_calls_that_would_wait_for_their_own_thread_are_refused(backend):
    consumer = ConsumerThread(SignalPipeline(), backend=backend)
    errors: list[str] = []
    done = threading.Event()

    async def on_the_loop() -> None:
        for call in (consumer.flush, consumer.stop, partial(consumer.start_soon, on_the_loop)):
            with pytest.raises(RuntimeError) as error:
                call()
            errors.append(str(error.value))
        done.set()

    with consumer:
        consumer.start_soon(on_the_loop)
        assert done.wait(10)
        assert consumer.running
    assert len(errors) == 3
    for what, error in zip(("flush()", "stop()", "start_soon()"), errors, strict=True):
        assert error.startswith(f"ConsumerThread.{what} was called on the consumer's own thread")


def test_a_failing_task_stops_the_consumer_applies_the_queue_and_is_logged(
    registry, backend, caplog
):
    pipeline = SignalPipeline(batch_window=60.0, lone=False)
    listener = PrometheusListener("crash", registry, pipeline=pipeline)

    async def failing() -> None:
        raise ValueError("boom")

    consumer = ConsumerThread(pipeline, backend=backend).start()
    listener(TRIP)  # queued; the batch window keeps it there until the consumer stops
    with caplog.at_level(logging.ERROR, logger="fluxgate_stream"):
        consumer.start_soon(failing)
        deadline = time.monotonic() + 10
        while consumer.running:  # the failure ends the thread on its own
            assert time.monotonic() < deadline, "the consumer thread did not end"
            time.sleep(0.001)  # sleep-ok: a deadline poll for the crashed thread to end
    assert shown(registry, "crash") == "open"  # stopping applied what was queued
    assert not pipeline.running
    assert pipeline.stats()["direct"] == 0
    [record] = [r for r in caplog.records if "event loop failed" in r.getMessage()]
    assert "boom" in str(record.exc_info[1]) or "boom" in repr(record.exc_info[1].exceptions)
    consumer.stop()  # idempotent after a crash: only joins
    listener(RECOVER)  # no consumer: applied directly
    assert shown(registry, "crash") == "closed"


def test_stop_times_out_on_a_task_that_ignores_cancellation():
    release = threading.Event()

    async def stubborn() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(release.wait)

    consumer = ConsumerThread(SignalPipeline()).start()
    consumer.start_soon(stubborn)
    with pytest.raises(TimeoutError, match=r"^the consumer thread was still running after 0\.2 s$"):
        consumer.stop(timeout=0.2)
    release.set()
    consumer.stop()  # now it ends
    assert not consumer.running


@pytest.mark.slow
@pytest.mark.parametrize("child_backend", BACKENDS)
@pytest.mark.parametrize("start", ["", "interrupted"], ids=["started", "start-interrupted"])
def test_exit_without_stop_applies_the_queue_at_exit(child_backend, start):
    # Also when a Ctrl-C interrupted start(): the consumer runs all the same, and must be
    # stopped at exit like any other (before, its atexit hook was not registered yet).
    args = [child_backend, start] if start else [child_backend]
    result = run_python(CHILDREN / "exit_with_the_consumer_thread_running.py", *args)
    assert result.stdout.split() == ["101.0", "1.0", "201"]


def test_a_loop_that_cannot_start_fails_start_with_its_own_error():
    # trio missing (here: made unimportable in a fresh interpreter): start() raises what
    # anyio.run raised, the thread has ended, and listener calls keep applying directly.
    code = (
        "import sys\n"
        "from fluxgate_stream import ConsumerThread, SignalPipeline\n"
        "sys.modules['trio'] = None  # import trio now fails\n"
        "consumer = ConsumerThread(SignalPipeline(), backend='trio')\n"
        "try:\n"
        "    consumer.start()\n"
        "except LookupError as error:\n"
        "    print(error, consumer.running, consumer.pipeline.running)\n"
        "try:\n"
        "    consumer.start()\n"
        "except RuntimeError as error:\n"
        "    print(error)\n"
        "consumer.stop()\n"
    )
    lines = run_python("-c", code).stdout.splitlines()
    assert (
        lines[0]
        == "Backend 'trio' is not available. Install it with: pip install anyio[trio] False False"
    )
    assert lines[1] == (
        "this ConsumerThread was already started (it is stopped); "
        "a ConsumerThread runs once: create a new one"
    )


@pytest.mark.parametrize("child_backend", BACKENDS)
def test_after_a_fork_the_childs_copy_is_stopped_and_the_parents_runs_on(child_backend):
    result = run_python(CHILDREN / "fork_with_a_consumer_thread.py", child_backend)
    assert result.stdout.splitlines() == [
        "child running=False stop-took-under-10s=True",
        "parent 1.0 1 True",
    ]


class HeldSink:
    """A sink whose first write waits for ``release``: the consumer is busy until then."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.written = 0

    def write(self, transitions: object) -> None:  # noqa: ARG002  # the SignalSink protocol's name
        self.entered.set()
        self.release.wait(10)
        self.written += 1


def in_frames(thread_id: int, name: str) -> bool:
    """Whether a frame of function ``name`` is on thread ``thread_id``'s stack now."""
    import sys  # noqa: PLC0415  # one helper

    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False


def test_flush_while_another_thread_stops_waits_for_the_stop_to_apply_what_was_queued(backend):
    # stop() on one thread, flush() on another: the consumer is still applying (its sink is
    # busy), so what was queued before the flush is not applied yet; flush() must wait for it.
    from fluxgate_stream import StreamingListener  # noqa: PLC0415  # one test

    sink = HeldSink()
    pipeline = SignalPipeline()
    listener = StreamingListener("held", sink, pipeline=pipeline)
    consumer = ConsumerThread(pipeline, backend=backend).start()
    listener(TRIP)
    assert sink.entered.wait(10)
    stopping = threading.Thread(target=consumer.stop)
    stopping.start()
    main = threading.get_ident()

    def release_once_flush_waits() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and stopping.is_alive():
            if in_frames(main, "flush") and in_frames(main, "join"):
                break
            time.sleep(0.001)  # sleep-ok: a deadline poll of the other thread's stack
        sink.release.set()

    releaser = threading.Thread(target=release_once_flush_waits)
    deadline = time.monotonic() + 10
    while consumer._phase != "stopping" and time.monotonic() < deadline:  # stop() has begun
        time.sleep(0.001)  # sleep-ok: a deadline poll, as above
    releaser.start()
    consumer.flush(timeout=10)
    written = sink.written
    sink.release.set()
    releaser.join()
    stopping.join()
    assert written == 1
