"""A WSGI app with a sync fluxgate ``CircuitBreaker``; the consumer runs in a background thread.

Request threads (here the server's, in Flask or Django your workers') call the breaker; its
listener only appends each signal to the pipeline's thread bridge. The consumer, on the event
loop that a ``fluxgate_stream.ConsumerThread`` runs in a thread of its own, writes the metrics.
Stdlib ``wsgiref`` serves it; ``examples/flask_app.py`` is the same with Flask, whose threaded
server runs requests concurrently.

Run it from a checkout of fluxgate-stream (it is not on PyPI yet) with::

    pip install .
    python examples/threads_app.py --port 8000

then ``curl 'localhost:8000/pay?fail=true'`` three times to trip the breaker, and
``curl localhost:8000/metrics``. Ctrl-C (or SIGTERM) stops it gracefully: the request in progress
finishes, then the consumer applies everything still queued.

fluxgate's sync ``CircuitBreaker`` is not thread-safe: it is shared here only because ``wsgiref``'s
server handles one request at a time. Where requests run concurrently, share a
``fluxgate_stream.ThreadSafeCircuitBreaker`` instead (see ``examples/flask_app.py``).
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import TYPE_CHECKING
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from fluxgate import CallNotPermittedError, CircuitBreaker
from fluxgate.retries import Cooldown
from fluxgate.trippers import FailureRate, MinRequests
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from fluxgate_stream import ConsumerThread, PrometheusListener

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import FrameType

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class PaymentProviderError(ConnectionError):
    """The (simulated) payment provider failed."""


def charge(*, fail: bool) -> str:
    """Call the payment provider; a real app would make an HTTP request here."""
    if fail:
        raise PaymentProviderError("payment provider unavailable")
    return "paid"


def make_app(cb: CircuitBreaker, registry: CollectorRegistry = REGISTRY) -> WSGIApplication:
    """The app: ``/pay`` charges through ``cb``; ``/metrics`` serves ``registry``."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/metrics":
            return metrics_app(environ, start_response)
        if environ["PATH_INFO"] != "/pay":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        fail = parse_qs(environ.get("QUERY_STRING", "")).get("fail") == ["true"]
        try:
            body, status = cb.call(charge, fail=fail), "200 OK"
        except CallNotPermittedError:
            body, status = "payment provider circuit is open", "503 Service Unavailable"
        except PaymentProviderError as error:
            body, status = str(error), "502 Bad Gateway"
        start_response(status, [("Content-Type", "text/plain")])
        return [body.encode() + b"\n"]

    return app


class QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing."""


def main(argv: list[str] | None = None) -> None:
    """Serve the app until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Serve a WSGI app with a fluxgate breaker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args(argv)

    cb = CircuitBreaker(
        tripper=MinRequests(3) & FailureRate(0.5),
        retry=Cooldown(30.0),
        listeners=[PrometheusListener(name="payment_api")],
    )
    with (
        ConsumerThread(),  # the default pipeline, which PrometheusListener uses unless told
        make_server(args.host, args.port, make_app(cb), handler_class=QuietHandler) as server,
    ):

        def stop(_signum: int, _frame: FrameType | None) -> None:
            # Finish the request in progress, then return from serve_forever(). shutdown() waits
            # for serve_forever() to return, so it must be called from another thread.
            threading.Thread(target=server.shutdown).start()

        signal.signal(signal.SIGINT, stop)  # Ctrl-C
        signal.signal(signal.SIGTERM, stop)  # docker stop, kubernetes, systemd
        url = f"http://{args.host}:{server.server_port}/"
        print(f"Serving on {url} (Ctrl-C to stop)", flush=True)
        server.serve_forever()
    print("Stopped; every transition is exported.", flush=True)


if __name__ == "__main__":
    main()
