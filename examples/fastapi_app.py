"""FastAPI + fluxgate-stream: the breaker's metrics at /metrics, written off the request path.

Run it from a checkout of fluxgate-stream (it is not on PyPI yet) with::

    pip install . fastapi uvicorn
    uvicorn --app-dir examples fastapi_app:app --port 8000

then ``curl 'localhost:8000/pay?fail=true'`` three times to trip the breaker, and
``curl localhost:8000/metrics/`` to see ``circuit_breaker_state{circuit_name="payment_api",...}``.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fluxgate import AsyncCircuitBreaker, CallNotPermittedError
from fluxgate.retries import Cooldown
from fluxgate.trippers import FailureRate, MinRequests
from prometheus_client import make_asgi_app

from fluxgate_stream import PrometheusListener
from fluxgate_stream.asgi import lifespan

# lifespan() runs the consumer of the default pipeline (the one listeners use unless given
# pipeline=) for as long as the app runs, and applies everything still queued at shutdown.
app = FastAPI(lifespan=lifespan())
app.mount("/metrics", make_asgi_app())

cb = AsyncCircuitBreaker(
    tripper=MinRequests(3) & FailureRate(0.5),
    retry=Cooldown(30.0),
    listeners=[PrometheusListener(name="payment_api")],
)


class PaymentProviderError(ConnectionError):
    """The (simulated) payment provider failed."""


async def charge(*, fail: bool) -> str:
    """Call the payment provider; a real app would make an HTTP request here."""
    if fail:
        raise PaymentProviderError("payment provider unavailable")
    return "paid"


@app.get("/pay")
async def pay(fail: bool = False) -> dict[str, str]:  # noqa: FBT001, FBT002  # a query parameter
    """Charge through the breaker: 502 when the provider fails, 503 while the circuit is open."""
    try:
        status = await cb.call(charge, fail=fail)
    except CallNotPermittedError as error:
        raise HTTPException(503, "payment provider circuit is open") from error
    except PaymentProviderError as error:
        raise HTTPException(502, str(error)) from error
    return {"status": status}
