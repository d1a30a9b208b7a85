"""The runnable examples under examples/, run as users run them, and their patterns in-process."""

from __future__ import annotations

import importlib.util
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from wsgiref.simple_server import make_server

import pytest
from fluxgate import CircuitBreaker
from fluxgate.retries import Cooldown
from fluxgate.trippers import FailureRate, MinRequests

from fluxgate_stream import ALL_STATES, ConsumerThread, PrometheusListener, SignalPipeline
from fluxgate_stream._catalogue import OWN_TRANSITIONS

from ..support.http import Samples, http_get, poll, scrape
from ..support.metrics import count, samples, shown
from ..support.processes import start_python

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# -- running things and reading them over HTTP ------------------------------------------------


class Process:
    """A child process whose output lines a test can wait for, with a deadline."""

    def __init__(self, *args: str | Path, pass_fds: tuple[int, ...] = ()) -> None:
        self.popen = start_python(*args, stderr=subprocess.STDOUT, pass_fds=pass_fds)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first new output line matching ``pattern``; fail at the deadline or on exit."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in {timeout} s: {self.lines}")
            if line is None:
                pytest.fail(f"exited before printing {pattern!r}: {self.lines}")
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def interrupt(self, signum: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``signum`` (Ctrl-C); return the exit code once it has exited and said all."""
        self.popen.send_signal(signum)
        code = self.popen.wait(timeout)
        self._reader.join(timeout)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        assert self.popen.stdout is not None
        self.popen.stdout.close()


@contextmanager
def running_script(*args: str | Path, pass_fds: tuple[int, ...] = ()) -> Iterator[Process]:
    process = Process(*args, pass_fds=pass_fds)
    try:
        yield process
    finally:
        process.kill()


def tripped_once(scraped: Samples, name: str) -> bool:
    """Whether ``name`` shows exactly: open, one closed -> open transition, the breaker's other
    own transitions at 0 (since its listener's creation), nothing else."""
    states = {
        labels[1][1]: value
        for (metric, labels), value in scraped.items()
        if metric == "circuit_breaker_state" and labels[0] == ("circuit_name", name)
    }
    transitions = {
        labels: value
        for (metric, labels), value in scraped.items()
        if metric == "circuit_breaker_state_transition_total"
    }
    return states == {state: (1.0 if state == "open" else 0.0) for state in ALL_STATES} and (
        transitions
        == {
            (("circuit_name", name), ("new_state", new), ("old_state", old)): float(
                (old, new) == ("closed", "open")
            )
            for old, new in OWN_TRANSITIONS
        }
    )


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- examples/sync_script.py: the spec's "Basic Setup", no consumer ---------------------------


def test_sync_script_serves_its_breaker_over_http_and_stops_on_ctrl_c():
    script = str(EXAMPLES / "sync_script.py")
    with running_script(script, "--port", "0") as process:
        match = process.wait_for(r"(\d+) calls failed, (\d+) rejected; metrics on (\S+)")
        assert match.group(1, 2) == ("3", "2")
        # No consumer: each transition was applied before the call returned, so the first
        # scrape is exact.
        assert tripped_once(scrape(match.group(3)), "payment_api")
        assert process.interrupt() == 0


# -- examples/threads_app.py: WSGI, the consumer in a background thread -----------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_threads_app_serves_its_breaker_over_http_and_stops_on_a_signal(signum):
    # The app handles both signals itself: no KeyboardInterrupt, which wsgiref's request
    # handler would swallow if Ctrl-C came during a request.
    with running_script(str(EXAMPLES / "threads_app.py"), "--port", "0") as process:
        base = process.wait_for(r"Serving on (http://\S+/) ").group(1)
        assert [http_get(f"{base}pay?fail=true")[0] for _ in range(3)] == [502, 502, 502]
        assert http_get(f"{base}pay") == (503, "payment provider circuit is open\n")
        assert http_get(f"{base}nowhere")[0] == 404
        poll(lambda: tripped_once(scrape(f"{base}metrics"), "payment_api"))
        assert process.interrupt(signum) == 0
        assert process.lines[-1] == "Stopped; every transition is exported.\n"


def test_the_wsgi_app_feeds_the_consumer_thread_exact_counts_after_flush(registry):
    example = load_example("threads_app")
    pipeline = SignalPipeline()
    cb = CircuitBreaker(
        tripper=MinRequests(3) & FailureRate(0.5),
        retry=Cooldown(60.0),
        listeners=[PrometheusListener("payment_api", registry, pipeline=pipeline)],
    )
    app = example.make_app(cb, registry)
    with (
        ConsumerThread(pipeline) as consumer,
        make_server("127.0.0.1", 0, app, handler_class=example.QuietHandler) as server,
    ):
        serving = threading.Thread(target=server.serve_forever)
        serving.start()
        try:
            base = f"http://127.0.0.1:{server.server_port}/"
            assert pipeline.running
            assert [http_get(f"{base}pay?fail=true")[0] for _ in range(3)] == [502, 502, 502]
            assert http_get(f"{base}pay")[0] == 503
            cb.reset()  # from this thread too: another producer on the bridge
            consumer.flush()
            assert shown(registry, "payment_api") == "closed"
            assert count(registry, "payment_api", "closed", "open") == 1
            assert count(registry, "payment_api", "open", "closed") == 1
            assert http_get(f"{base}pay") == (200, "paid\n")
            scraped = scrape(f"{base}metrics")
        finally:
            server.shutdown()
            serving.join()
    assert scraped == samples(registry)
    assert not pipeline.running


def test_worker_threads_with_their_own_breakers_give_exact_counts(registry):
    example = load_example("threads_app")
    pipeline = SignalPipeline()
    workers, cycles = 8, 60

    def work(index: int) -> None:
        # fluxgate's CircuitBreaker is not thread-safe: each worker thread has its own.
        cb = CircuitBreaker(
            tripper=MinRequests(1) & FailureRate(1.0),
            retry=Cooldown(60.0),
            listeners=[PrometheusListener(f"worker-{index}", registry, pipeline=pipeline)],
        )
        for _ in range(cycles):
            with suppress(example.PaymentProviderError):
                cb.call(example.charge, fail=True)  # trips: closed -> open
            cb.force_open()  # open -> forced_open
            cb.reset()  # forced_open -> closed

    with ConsumerThread(pipeline) as consumer:
        threads = [threading.Thread(target=work, args=(index,)) for index in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        consumer.flush()
        for index in range(workers):
            name = f"worker-{index}"
            assert shown(registry, name) == "closed"
            assert count(registry, name, "closed", "open") == cycles
            assert count(registry, name, "open", "forced_open") == cycles
            assert count(registry, name, "forced_open", "closed") == cycles
        assert pipeline.running
    assert not pipeline.running


# -- examples/fastapi_app.py under a real uvicorn ---------------------------------------------


def test_fastapi_app_under_uvicorn_serves_its_breaker_and_shuts_down_cleanly():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    host, port = sock.getsockname()
    base = f"http://{host}:{port}"
    fd = str(sock.fileno())
    uvicorn_args = ["-m", "uvicorn", "fastapi_app:app", "--app-dir", str(EXAMPLES), "--fd", fd]
    try:
        with running_script(*uvicorn_args, pass_fds=(sock.fileno(),)) as process:
            process.wait_for(r"Application startup complete")
            assert [http_get(f"{base}/pay?fail=true")[0] for _ in range(3)] == [502, 502, 502]
            assert http_get(f"{base}/pay") == (503, '{"detail":"payment provider circuit is open"}')
            poll(lambda: tripped_once(scrape(f"{base}/metrics"), "payment_api"))
            assert process.interrupt() == 0
            assert any("Application shutdown complete" in line for line in process.lines)
    finally:
        sock.close()
