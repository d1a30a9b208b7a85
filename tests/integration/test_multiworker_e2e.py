"""A real Prometheus scraping a real multi-worker server while breakers trip in several workers.

``examples/multiworker_app.py`` runs under gunicorn with uvicorn workers and ``--preload`` (the
app imported in the master, then forked), and under ``uvicorn --workers``, in prometheus_client's
multiprocess mode. Each ``/pay?fail=true`` fails in the worker that serves it, and its answer
names that worker and its circuit's state; three failures trip a worker's breaker. We cannot
choose the worker a request goes to, so the test sends failures until the wanted number of
distinct workers have tripped. Then it asks Prometheus, kills a tripped worker with SIGKILL (no
``mark_process_dead``: the server has no such hook configured) and asks again.

Prometheus learns nothing between two scrapes: the test waits on the scrapes of a second,
in-process target (``ScrapeWatch``), scraped on the same one-second schedule, between checks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from ..support.processes import process_group
from ..support.prom import PrometheusServer, ScrapeWatch, eventually, require_module, require_tool

pytestmark = [pytest.mark.slow, pytest.mark.prometheus]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKERS = 3
TRIPPED = 2
NAME = "payment_api"


def pay(base: str) -> tuple[int, dict[str, Any]]:
    """``GET /pay?fail=true``: the status, and the worker's answer (pid, state)."""
    try:
        with urllib.request.urlopen(f"{base}/pay?fail=true", timeout=10) as response:  # noqa: S310  # loopback
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def serving(base: str) -> bool:
    """Whether a worker answers ``/metrics/`` (one real request)."""
    try:
        with urllib.request.urlopen(f"{base}/metrics/", timeout=10) as response:  # noqa: S310  # loopback
            return response.status == 200
    except OSError:
        return False


def wait_until_serving(base: str, log: Path, within: float = 60.0) -> None:
    """Re-try a real request until a worker answers, or fail at the deadline with the log."""
    deadline = time.monotonic() + within
    while not serving(base):
        if time.monotonic() > deadline:
            pytest.fail(f"the server never answered:\n{log.read_text()}")


def trip_workers(base: str, wanted: int, within: float = 60.0) -> set[int]:
    """Send failures until ``wanted`` distinct workers answer that their circuit is open."""
    deadline = time.monotonic() + within
    opened: set[int] = set()
    answers: list[tuple[int, dict[str, Any]]] = []
    while len(opened) < wanted:
        assert time.monotonic() < deadline, f"only {len(opened)} workers tripped: {answers}"
        status, answer = pay(base)
        answers.append((status, answer))
        assert status in {502, 503}, answer
        if answer["state"] == "open":
            opened.add(answer["pid"])
    return opened


def by_state(server: PrometheusServer) -> dict[str, float]:
    """``sum by (state) (circuit_breaker_state{circuit_name=NAME})``, as Prometheus has it."""
    query = f'sum by (state) (circuit_breaker_state{{circuit_name="{NAME}"}})'
    return {r["metric"]["state"]: float(r["value"][1]) for r in server.query(query)}


def scalar(server: PrometheusServer, query: str) -> float | None:
    result = server.query(query)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def states(**counts: float) -> dict[str, float]:
    every = ("closed", "open", "half_open", "metrics_only", "disabled", "forced_open")
    return {state: counts.get(state, 0.0) for state in every}


def gunicorn(fd: int) -> list[str]:
    # No child_exit hook: the example's collector drops a dead worker's live gauges itself.
    return [
        "-m",
        "gunicorn",
        "--chdir",
        str(EXAMPLES),
        "--preload",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--bind",
        f"fd://{fd}",
        "--no-control-socket",
        "multiworker_app:app",
    ]


def uvicorn(fd: int) -> list[str]:
    return [
        "-m",
        "uvicorn",
        "--app-dir",
        str(EXAMPLES),
        "--workers",
        str(WORKERS),
        "--fd",
        str(fd),
        "multiworker_app:app",
    ]


@pytest.fixture
def pacer() -> Iterator[tuple[str, ScrapeWatch]]:
    """An in-process target that exports nothing: its scrapes are the test's clock."""
    registry = CollectorRegistry()
    watch = ScrapeWatch()
    registry.register(watch)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{server.server_port}", watch
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """The server's listening socket, bound here so that no other process can take the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock


@pytest.mark.parametrize("command", [gunicorn, uvicorn], ids=["gunicorn-preload", "uvicorn"])
async def test_prometheus_counts_the_workers_in_each_state_and_forgets_a_dead_one(
    anyio_backend,
    tmp_path: Path,
    pacer: tuple[str, ScrapeWatch],
    listening: socket.socket,
    command: Callable[[int], list[str]],
):
    require_module("gunicorn", "gunicorn")
    require_module("uvicorn_worker", "uvicorn-worker")
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    host, port = listening.getsockname()
    base = f"http://{host}:{port}"
    log = tmp_path / "server.log"
    target, watch = pacer
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    server = PrometheusServer(require_tool("prometheus"), prometheus_dir, [f"{host}:{port}"], [])
    # The app mounts its metrics at /metrics/ (Starlette redirects /metrics there; Prometheus
    # follows redirects).
    fd = listening.fileno()
    with process_group(*command(fd), log=log, env=env, pass_fds=(fd,)):
        wait_until_serving(base, log)
        server.targets.append(target)
        server.start()
        try:

            async def until(probe: Callable[[], tuple[bool, Any]], what: str) -> Any:
                return await eventually(server, watch, probe, what=what, within=60.0)

            def shows(expected: dict[str, float]) -> Callable[[], tuple[bool, Any]]:
                def probe() -> tuple[bool, Any]:
                    got = by_state(server)
                    return got == expected, (got, log.read_text()[-2000:])

                return probe

            # Every worker counts as closed from the start (forked after the master created
            # the listener, with --preload); the master, which serves nothing, does not count.
            await until(shows(states(closed=WORKERS)), "every worker closed, the master not")

            tripped = await anyio.to_thread.run_sync(trip_workers, base, TRIPPED)
            assert len(tripped) == TRIPPED
            await until(
                shows(states(open=TRIPPED, closed=WORKERS - TRIPPED)), "two workers open, one not"
            )

            def alerting() -> tuple[bool, Any]:
                # The alert-style query: "open anywhere", whatever the number of workers.
                got = server.query('circuit_breaker_state{state="open"} > 0')
                names = [(r["metric"]["circuit_name"], float(r["value"][1])) for r in got]
                return names == [(NAME, float(TRIPPED))], names

            await until(alerting, "the circuit in `circuit_breaker_state{state='open'} > 0`")
            trips = 'sum(circuit_breaker_state_transition_total{new_state="open"})'

            # polled: a worker writes its state before its counter, and a scrape between the
            # two shows it open with its trip not yet counted
            def counted() -> tuple[bool, float]:
                n = scalar(server, trips)
                return n == TRIPPED, n

            await until(counted, "every trip counted")

            # A tripped worker is killed: nobody calls mark_process_dead. The server starts a
            # new worker, which counts as closed; the dead one's state goes from the next scrape
            # on, its transitions stay in the totals.
            dead = min(tripped)
            os.kill(dead, signal.SIGKILL)
            await until(
                shows(states(open=TRIPPED - 1, closed=WORKERS - TRIPPED + 1)),
                "the dead worker gone, its replacement closed",
            )
            assert scalar(server, trips) == TRIPPED
            assert scalar(server, "count(circuit_breaker_state_transition_total) > 0") is not None
            assert not list(directory.glob(f"gauge_live*_{dead}.db"))
        finally:
            server.stop()
