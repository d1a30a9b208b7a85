"""A Flask app: request threads share one breaker per circuit; the consumer runs in a thread.

Flask's server (and gunicorn's gthread workers) run each request in a thread of its own, so the
breaker is shared by every request thread: a ``ThreadSafeCircuitBreaker``, since fluxgate's own
``CircuitBreaker`` is not thread-safe. Each transition's listener call is one append onto the
pipeline's thread bridge; the consumer, on a ``ConsumerThread``'s event loop, writes the metrics,
which ``prometheus_client.make_wsgi_app()`` serves at ``/metrics``.

Run it from a checkout of fluxgate-stream (it is not on PyPI yet) with::

    pip install . flask
    python examples/flask_app.py --port 8000

then ``curl 'localhost:8000/pay?fail=true'`` four times to trip the breaker, and
``curl localhost:8000/metrics``. Ctrl-C stops it; the consumer then applies what is still
queued. Under gunicorn, ``examples/gunicorn.conf.py`` starts the consumer in each worker, after
the fork::

    gunicorn -c examples/gunicorn.conf.py --threads 8 --chdir examples 'flask_app:create_app()'
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from flask import Flask, request
from fluxgate import CallNotPermittedError
from fluxgate.retries import Cooldown
from fluxgate.trippers import FailureRate, MinRequests
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from fluxgate_stream import ConsumerThread, PrometheusListener, ThreadSafeCircuitBreaker

if TYPE_CHECKING:
    from collections.abc import Callable

    from fluxgate import CircuitBreaker

    from fluxgate_stream import SignalPipeline


class PaymentProviderError(ConnectionError):
    """The (simulated) payment provider failed."""


def charge(*, fail: bool) -> str:
    """Call the payment provider; a real app would make an HTTP request here."""
    if fail:
        raise PaymentProviderError("payment provider unavailable")
    return "paid"


def create_app(
    registry: CollectorRegistry = REGISTRY,
    pipeline: SignalPipeline | None = None,
    *,
    provider: Callable[..., str] = charge,
    breaker: ThreadSafeCircuitBreaker | CircuitBreaker | None = None,
) -> Flask:
    """The app: ``/pay`` charges through one shared breaker; ``/metrics`` serves ``registry``.

    ``pipeline`` (default: the default pipeline) carries the breaker's signals; ``provider`` is
    the call the breaker protects and ``breaker`` replaces the app's own (tests use both).
    """
    if breaker is None:
        breaker = ThreadSafeCircuitBreaker(  # one per circuit, for every request thread
            tripper=MinRequests(4) & FailureRate(0.5),
            retry=Cooldown(30.0),
            listeners=[PrometheusListener("payment_api", registry, pipeline=pipeline)],
        )
    payments = breaker
    app = Flask(__name__)
    app.extensions["payment_breaker"] = payments  # for an admin view, or a test, to reach
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app(registry)})

    @app.get("/pay")
    def pay() -> tuple[str, int]:
        fail = request.args.get("fail") == "true"
        try:
            return payments.call(provider, fail=fail) + "\n", 200
        except CallNotPermittedError:
            return "payment provider circuit is open\n", 503
        except PaymentProviderError as error:
            return f"{error}\n", 502

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the app with Flask's threaded server until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Serve a Flask app with a shared breaker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    app = create_app()
    # Started before the first request, in the process that serves: from now on every signal
    # is queued. Leaving the block applies what is still queued.
    with ConsumerThread():  # the default pipeline, which the listener uses
        app.run(host=args.host, port=args.port, threaded=True)
    print("Stopped; every transition is exported.", flush=True)


if __name__ == "__main__":
    main()
