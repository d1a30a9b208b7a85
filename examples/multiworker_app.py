r"""Several worker processes (gunicorn with uvicorn workers, or ``uvicorn --workers``), one view.

prometheus_client's multiprocess mode: every worker writes its metrics to files of its own in
``PROMETHEUS_MULTIPROC_DIR``, and whichever worker serves ``/metrics`` merges them all. Run it
from a checkout of fluxgate-stream (it is not on PyPI yet)::

    pip install . fastapi gunicorn uvicorn-worker
    export PROMETHEUS_MULTIPROC_DIR=/tmp/multiworker-metrics
    rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"  # each start
    gunicorn --chdir examples --preload --workers 3 --worker-class uvicorn_worker.UvicornWorker \
        --bind 127.0.0.1:8000 multiworker_app:app
    # or: uvicorn --app-dir examples multiworker_app:app --workers 3 --port 8000

then ``curl 'localhost:8000/pay?fail=true'`` a few times: each answer names the worker (``pid``)
that served it and its circuit's state, and a worker's breaker trips after three failures.
``curl localhost:8000/metrics/`` shows ``circuit_breaker_state{circuit_name="payment_api",...}``
as the number of workers in each state.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fluxgate import AsyncCircuitBreaker, CallNotPermittedError
from fluxgate.retries import Cooldown
from fluxgate.trippers import FailureRate, MinRequests
from prometheus_client import CollectorRegistry, make_asgi_app

from fluxgate_stream import MultiProcessCollector, PrometheusListener, export_metrics
from fluxgate_stream.asgi import running

# Module level: with gunicorn --preload this runs once, in the master, before it forks the
# workers; otherwise once in each worker. Either way each worker has its own breaker, and its
# circuit counts as closed from the start (the master, which serves nothing, does not count).
cb = AsyncCircuitBreaker(
    tripper=MinRequests(3) & FailureRate(0.5),
    retry=Cooldown(60.0),
    listeners=[PrometheusListener(name="payment_api")],
)
# The pipeline's own counters, written to this worker's files by metrics.run() (below).
metrics = export_metrics()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Per worker, while it serves: the consumer, and the self-metrics publisher next to it."""
    async with anyio.create_task_group() as tg:
        async with running():  # the consumer of the default pipeline, which the listener uses
            await tg.start(metrics.run)
            yield
        # The consumer has stopped and applied everything queued: publish the final counts.
        tg.cancel_scope.cancel()


app = FastAPI(lifespan=lifespan)

# One registry for the endpoint, holding only the collector that merges every worker's files
# and drops the live gauges of workers that have died (no server hook needed).
registry = CollectorRegistry()
MultiProcessCollector(registry)
app.mount("/metrics", make_asgi_app(registry))


class PaymentProviderError(ConnectionError):
    """The (simulated) payment provider failed."""


async def charge(*, fail: bool) -> str:
    """Call the payment provider; a real app would make an HTTP request here."""
    if fail:
        raise PaymentProviderError("payment provider unavailable")
    return "paid"


@app.get("/pay")
async def pay(fail: bool = False) -> JSONResponse:  # noqa: FBT001, FBT002  # a query parameter
    """Charge through this worker's breaker; say which worker answered and its circuit's state.

    200 when paid, 502 when the provider failed, 503 while this worker's circuit is open.
    """
    try:
        outcome, status = await cb.call(charge, fail=fail), 200
    except CallNotPermittedError:
        outcome, status = "circuit open", 503
    except PaymentProviderError as error:
        outcome, status = str(error), 502
    answer = {"pid": os.getpid(), "outcome": outcome, "state": cb.info().state}
    return JSONResponse(answer, status_code=status)
