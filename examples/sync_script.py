"""The "Basic Setup" of fluxgate's Prometheus page, with fluxgate-stream's listener.

A plain script: no event loop, no consumer. ``start_http_server`` serves the metrics from a
background thread; with no consumer running, each listener call applies to the metrics at once,
exactly as upstream's listener does.

Run it from a checkout of fluxgate-stream (it is not on PyPI yet) with::

    pip install .
    python examples/sync_script.py --port 8000

then ``curl localhost:8000/metrics``. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import threading
from collections import Counter
from contextlib import suppress

from fluxgate import CallNotPermittedError, CircuitBreaker
from fluxgate.retries import Cooldown
from fluxgate.trippers import FailureRate, MinRequests
from prometheus_client import start_http_server

from fluxgate_stream import PrometheusListener


class PaymentProviderError(ConnectionError):
    """The (simulated) payment provider failed."""


def charge() -> str:
    """Call the payment provider, which is down; a real script would make a request here."""
    raise PaymentProviderError("payment provider unavailable")


def attempt(cb: CircuitBreaker) -> str:
    """Charge through the breaker; say how it went: ``ok``, ``failed`` or ``rejected``."""
    try:
        cb.call(charge)
    except PaymentProviderError:
        return "failed"
    except CallNotPermittedError:
        return "rejected"
    return "ok"


def main(argv: list[str] | None = None) -> None:
    """Trip a breaker, then serve its metrics until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Serve a fluxgate breaker's metrics.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args(argv)

    # Start the Prometheus metrics server. It runs in a background thread and does not block.
    server, _ = start_http_server(args.port, addr=args.host)

    cb = CircuitBreaker(
        tripper=MinRequests(3) & FailureRate(0.5),
        retry=Cooldown(60.0),
        listeners=[PrometheusListener(name="payment_api")],
    )

    # Your application logic here: five calls to a provider that is down. Three fail and open
    # the circuit; the breaker rejects the other two without calling the provider.
    outcomes = Counter(attempt(cb) for _ in range(5))

    url = f"http://{args.host}:{server.server_port}/metrics"
    failed, rejected = outcomes["failed"], outcomes["rejected"]
    with suppress(KeyboardInterrupt):  # entered before we say we are ready: Ctrl-C may follow
        print(f"{failed} calls failed, {rejected} rejected; metrics on {url}", flush=True)
        threading.Event().wait()  # keep serving until Ctrl-C
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
