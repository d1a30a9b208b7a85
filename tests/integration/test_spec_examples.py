"""The spec page's examples, unchanged but for the import line, run as real scripts.

Each example is the upstream page's code with ``fluxgate.listeners.prometheus`` replaced by
``fluxgate_stream``. Two mechanical edits make them runnable: the placeholder ``...,`` in
``CircuitBreaker(..., listeners=...)`` is dropped, and port 8000 becomes a free port. Each runs in
its own interpreter (the examples use the process-wide default registry), then we scrape it.
"""

from __future__ import annotations

import socket
import subprocess
import textwrap
import urllib.request

import pytest

from ..support.processes import run_python, start_python

UPSTREAM_IMPORT = "from fluxgate.listeners.prometheus import PrometheusListener"
OUR_IMPORT = "from fluxgate_stream import PrometheusListener"

BASIC_SETUP = """
from prometheus_client import start_http_server
from fluxgate import CircuitBreaker
from fluxgate.listeners.prometheus import PrometheusListener

# Start the Prometheus metrics server on port 8000.
# This runs in a background thread and does not block.
start_http_server(8000)

cb = CircuitBreaker(
    ...,
    listeners=[PrometheusListener(name="payment_api")],
)

# Your application logic here...

# The metrics will be available at http://localhost:8000/metrics
"""

MULTIPLE = """
from prometheus_client import start_http_server
from fluxgate import CircuitBreaker
from fluxgate.listeners.prometheus import PrometheusListener

start_http_server(8000)

payment_cb = CircuitBreaker(
    ...,
    listeners=[PrometheusListener(name="payment_api")],
)
inventory_cb = CircuitBreaker(
    ...,
    listeners=[PrometheusListener(name="inventory_api")],
)
"""

CUSTOM_REGISTRY = """
from prometheus_client import CollectorRegistry
from fluxgate import CircuitBreaker
from fluxgate.listeners.prometheus import PrometheusListener

custom_registry = CollectorRegistry()
cb = CircuitBreaker(
    ...,
    listeners=[PrometheusListener(name="api", registry=custom_registry)],
)
"""

CLEANUP = """
listener = PrometheusListener(name="ephemeral")
cb = CircuitBreaker(..., listeners=[listener])

# ... breaker runs, emits state transitions ...

listener.close()  # remove every "circuit_name=ephemeral" series
"""

# What each test appends to drive the example's breakers and report what it exports.
SERVE_AND_WAIT = """
import sys
from prometheus_client import REGISTRY, generate_latest
for cb in [v for v in list(globals().values()) if isinstance(v, CircuitBreaker)]:
    cb.force_open()
print("ready", flush=True)
sys.stdin.readline()  # the test scrapes over HTTP, then lets us go
"""


def runnable(example: str, port: int) -> str:
    code = textwrap.dedent(example)
    assert UPSTREAM_IMPORT in code or "PrometheusListener(" in code
    code = code.replace(UPSTREAM_IMPORT, OUR_IMPORT)
    code = code.replace("    ...,\n", "").replace("(..., ", "(")
    return code.replace("start_http_server(8000)", f"start_http_server({port}, addr='127.0.0.1')")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_example(example: str) -> str:
    port = free_port()
    with start_python(
        "-c", runnable(example, port) + SERVE_AND_WAIT, stdin=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        try:
            line = process.stdout.readline()
            assert line == "ready\n", process.stderr.read() if process.stderr else line
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                body = reply.read().decode()
            process.stdin.write("\n")
            process.stdin.flush()
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
    return body


def run_example(example: str, epilogue: str) -> str:
    code = runnable(example, 0) + textwrap.dedent(epilogue)
    return run_python("-c", code).stdout


def test_basic_setup_serves_the_breakers_metrics_over_http():
    body = scrape_example(BASIC_SETUP)
    assert 'circuit_breaker_state{circuit_name="payment_api",state="forced_open"} 1.0' in body
    assert 'circuit_breaker_state{circuit_name="payment_api",state="closed"} 0.0' in body
    assert (
        'circuit_breaker_state_transition_total{circuit_name="payment_api",'
        'new_state="forced_open",old_state="closed"} 1.0' in body
    )


def test_multiple_circuits_are_separated_by_label():
    body = scrape_example(MULTIPLE)
    for name in ("payment_api", "inventory_api"):
        assert f'circuit_breaker_state{{circuit_name="{name}",state="forced_open"}} 1.0' in body


def test_custom_registry_isolates_from_the_default_registry():
    out = run_example(
        CUSTOM_REGISTRY,
        """
        from prometheus_client import REGISTRY
        cb.force_open()
        print(custom_registry.get_sample_value(
            "circuit_breaker_state", {"circuit_name": "api", "state": "forced_open"}))
        print(REGISTRY.get_sample_value(
            "circuit_breaker_state", {"circuit_name": "api", "state": "forced_open"}))
        """,
    )
    assert out.split() == ["1.0", "None"]


def test_cleanup_drops_the_series_and_they_return_on_the_next_transition():
    prologue = "from fluxgate import CircuitBreaker\n" + OUR_IMPORT + "\n"
    out = run_example(
        prologue + CLEANUP.replace("listener.close()", "cb.force_open()\nlistener.close()"),
        """
        from prometheus_client import REGISTRY
        def shown():
            return REGISTRY.get_sample_value(
                "circuit_breaker_state", {"circuit_name": "ephemeral", "state": "closed"})
        print(shown())
        listener.close()  # idempotent
        cb.reset()
        print(shown())
        """,
    )
    assert out.split() == ["None", "1.0"]


@pytest.mark.parametrize("example", [BASIC_SETUP, MULTIPLE, CUSTOM_REGISTRY])
def test_examples_differ_from_upstream_only_in_the_import_line(example):
    assert runnable(example, 8000).replace(OUR_IMPORT, UPSTREAM_IMPORT) == textwrap.dedent(
        example
    ).replace("    ...,\n", "").replace(
        "start_http_server(8000)", "start_http_server(8000, addr='127.0.0.1')"
    )
