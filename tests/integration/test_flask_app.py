"""examples/flask_app.py: request threads of a real threaded WSGI server share one breaker.

Real HTTP on 127.0.0.1 (werkzeug's threaded server, Flask's own dev server, gunicorn), the
consumer on a ``ConsumerThread``, ``/metrics`` read back over HTTP. The requests are made to be
in flight together (they meet at a barrier inside the protected call), so the breaker really is
shared by concurrent request threads on every run.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fluxgate import CircuitBreaker
from fluxgate.trippers import FailureStreak
from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

from fluxgate_stream import (
    ALL_STATES,
    ConsumerThread,
    PrometheusListener,
    SignalPipeline,
    ThreadSafeCircuitBreaker,
)

from ..support.http import Samples, http_get, poll, scrape
from .test_examples import EXAMPLES, load_example, running_script

WAIT = 10  # seconds: a safety net for a broken test, never what synchronises it
IN_FLIGHT = 8
TRANSITIONS = "circuit_breaker_state_transition_total"


def states(scraped: Samples, name: str) -> dict[str, float]:
    return {
        dict(labels)["state"]: value
        for (metric, labels), value in scraped.items()
        if metric == "circuit_breaker_state" and dict(labels)["circuit_name"] == name
    }


def transitions(scraped: Samples, name: str) -> dict[tuple[str, str], float]:
    """The transition counters of ``name`` that are not 0."""
    found = {}
    for (metric, labels), value in scraped.items():
        named = dict(labels)
        if metric == TRANSITIONS and named["circuit_name"] == name and value:
            found[named["old_state"], named["new_state"]] = value
    return found


def showing(state: str) -> dict[str, float]:
    return {each: (1.0 if each == state else 0.0) for each in ALL_STATES}


class Provider:
    """The payment provider: fails, once ``IN_FLIGHT`` requests are all inside it together."""

    def __init__(self, example) -> None:
        self.together = threading.Barrier(IN_FLIGHT, timeout=WAIT)
        self.error = example.PaymentProviderError

    def __call__(self, *, fail: bool) -> str:
        self.together.wait()
        if fail:
            raise self.error("payment provider unavailable")
        return "paid"


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` on werkzeug's threaded server (a thread per request), as Flask's ``run()`` does."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def concurrently(url: str, n: int) -> list[int]:
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(http_get(url)[0])) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_concurrent_requests_trip_the_shared_breaker_once_and_metrics_say_exactly_that(backend):
    example = load_example("flask_app")
    registry, pipeline = CollectorRegistry(), SignalPipeline()
    app = example.create_app(registry, pipeline, provider=Provider(example))
    with ConsumerThread(pipeline, backend=backend) as consumer, serving(app) as base:
        # Eight requests in flight together, all failing: the fourth outcome recorded trips the
        # breaker; the other four finished in a state the breaker has left (not recorded).
        assert concurrently(f"{base}pay?fail=true", IN_FLIGHT) == [502] * IN_FLIGHT
        assert http_get(f"{base}pay") == (503, "payment provider circuit is open\n")
        consumer.flush(WAIT)
        scraped = scrape(f"{base}metrics")
        assert states(scraped, "payment_api") == showing("open")
        assert transitions(scraped, "payment_api") == {("closed", "open"): 1.0}
        # Recover, and trip again: the counters keep counting, exactly.
        app.extensions["payment_breaker"].reset()  # as an operator's admin view would
        assert concurrently(f"{base}pay?fail=true", IN_FLIGHT) == [502] * IN_FLIGHT
        consumer.flush(WAIT)
        scraped = scrape(f"{base}metrics")
        assert states(scraped, "payment_api") == showing("open")
        assert transitions(scraped, "payment_api") == {
            ("closed", "open"): 2.0,
            ("open", "closed"): 1.0,
        }
    assert not pipeline.running


def eight_failures_at_once(breaker_class) -> Samples:
    """Eight concurrent failing requests through one shared ``breaker_class``; the scrape after."""
    example = load_example("flask_app")
    registry, pipeline = CollectorRegistry(), SignalPipeline()
    shared = breaker_class(
        tripper=FailureStreak(4),  # the streak survives the trip: each late thread trips again
        listeners=[PrometheusListener("payment_api", registry, pipeline=pipeline)],
    )
    app = example.create_app(registry, pipeline, provider=Provider(example), breaker=shared)
    with ConsumerThread(pipeline) as consumer, serving(app) as base:
        assert concurrently(f"{base}pay?fail=true", IN_FLIGHT) == [502] * IN_FLIGHT
        consumer.flush(WAIT)
        return scrape(f"{base}metrics")


def test_upstreams_breaker_shared_the_same_way_exports_trips_that_did_not_happen():
    # The negative control: fluxgate's CircuitBreaker, shared by the same request threads. Each
    # thread runs the closed state's tripper after its failure, whatever happened meanwhile:
    # the threads that recorded the 4th to 8th failures all trip.
    counted = transitions(eight_failures_at_once(CircuitBreaker), "payment_api")
    assert sum(counted.values()) >= 2  # one trip, exported as several (mostly "open -> open")


def test_ours_with_the_same_tripper_trips_once():
    scraped = eight_failures_at_once(ThreadSafeCircuitBreaker)
    assert transitions(scraped, "payment_api") == {("closed", "open"): 1.0}
    assert states(scraped, "payment_api") == showing("open")


def tripped(base: str) -> bool:
    scraped = scrape(f"{base}metrics")
    return states(scraped, "payment_api") == showing("open") and transitions(
        scraped, "payment_api"
    ) == {("closed", "open"): 1.0}


@pytest.mark.slow
def test_the_script_serves_on_flasks_threaded_server_and_stops_on_ctrl_c():
    script = str(EXAMPLES / "flask_app.py")
    with running_script(script, "--port", "0") as process:
        base = process.wait_for(r"Running on (http://127\.0\.0\.1:\d+)").group(1) + "/"
        assert concurrently(f"{base}pay?fail=true", 4) == [502] * 4
        assert http_get(f"{base}pay") == (503, "payment provider circuit is open\n")
        poll(lambda: tripped(base))  # the consumer applies within its batch window
        assert process.interrupt() == 0
        assert process.lines[-1] == "Stopped; every transition is exported.\n"


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 8])  # gunicorn's sync worker, and its gthread worker
def test_under_gunicorn_the_hooks_run_the_consumer_in_the_worker(threads):
    args = [
        "-m",
        "gunicorn",
        "-c",
        str(EXAMPLES / "gunicorn.conf.py"),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--threads",
        str(threads),
        "--chdir",
        str(EXAMPLES),
        "flask_app:create_app()",
    ]
    with running_script(*args) as process:
        base = process.wait_for(r"Listening at: (http://127\.0\.0\.1:\d+)").group(1) + "/"
        process.wait_for(r"fluxgate-stream consumer started in worker \d+")
        assert concurrently(f"{base}pay?fail=true", 4) == [502] * 4
        assert http_get(f"{base}pay") == (503, "payment provider circuit is open\n")
        poll(lambda: tripped(base))
        process.popen.send_signal(signal.SIGTERM)  # graceful: the worker exits, its hook runs
        process.wait_for(r"fluxgate-stream consumer stopped in worker \d+")
        assert process.popen.wait(WAIT) == 0
    assert not any(re.search(r"Traceback|Exception", line) for line in process.lines)
