"""fluxgate_stream.asgi: the consumer runs for an app's lifetime; a real uvicorn serves /metrics."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
import pytest
import uvicorn
from fluxgate import AsyncCircuitBreaker, CallNotPermittedError
from fluxgate.retries import Cooldown
from fluxgate.signal import Signal
from fluxgate.trippers import FailureRate, MinRequests
from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from fluxgate_stream import ALL_STATES, PrometheusListener, SignalPipeline, default_pipeline
from fluxgate_stream._catalogue import OWN_TRANSITIONS
from fluxgate_stream.asgi import lifespan, running

from ..support.http import http_get, poll, scrape
from ..support.metrics import count, shown

if TYPE_CHECKING:
    from starlette.requests import Request

OPEN = Signal(old_state="closed", new_state="open", timestamp=0.0)
CLOSE = Signal(old_state="open", new_state="closed", timestamp=0.0)


# -- the helpers, on both backends ------------------------------------------------------------


@pytest.mark.anyio
async def test_lifespan_runs_the_consumer_while_the_app_runs(registry, anyio_backend):
    pipeline = SignalPipeline(lone=False)  # every signal queued until the consumer runs
    listener = PrometheusListener("api", registry, pipeline=pipeline)
    async with lifespan(pipeline)(object()):
        assert pipeline.running
        listener(OPEN)
        assert shown(registry, "api") == "closed"  # queued: the consumer has not run yet
        await pipeline.flush()
        assert shown(registry, "api") == "open"
        listener(CLOSE)  # still queued when the app shuts down
    assert not pipeline.running
    assert shown(registry, "api") == "closed"
    assert count(registry, "api", "closed", "open") == 1
    assert count(registry, "api", "open", "closed") == 1


@pytest.mark.anyio
async def test_running_defaults_to_the_default_pipeline(anyio_backend):
    async with running() as pipeline:
        assert pipeline is default_pipeline()
        assert pipeline.running
    assert not default_pipeline().running


@pytest.mark.anyio
async def test_running_refuses_a_pipeline_whose_consumer_runs(anyio_backend):
    pipeline = SignalPipeline()
    async with running(pipeline):
        with pytest.raises(
            RuntimeError, match=r"^this SignalPipeline's consumer is already running$"
        ):
            async with running(pipeline):
                pass  # pragma: no cover
        assert pipeline.running
    assert not pipeline.running


@pytest.mark.anyio
async def test_an_error_in_the_block_propagates_unwrapped_after_applying(registry, anyio_backend):
    pipeline = SignalPipeline()
    listener = PrometheusListener("api", registry, pipeline=pipeline)

    async def fail_while_running() -> None:
        async with running(pipeline):
            listener(OPEN)
            raise KeyError("boom")

    with pytest.raises(KeyError, match=r"^'boom'$"):
        await fail_while_running()
    assert not pipeline.running
    assert shown(registry, "api") == "open"


@pytest.mark.anyio
async def test_cancelling_the_block_stops_the_consumer_after_applying(registry, anyio_backend):
    pipeline = SignalPipeline()
    listener = PrometheusListener("api", registry, pipeline=pipeline)
    with anyio.CancelScope() as scope:
        async with running(pipeline):
            listener(OPEN)
            scope.cancel()
            await anyio.Event().wait()  # cancelled at once
    assert scope.cancelled_caught
    assert not pipeline.running
    assert shown(registry, "api") == "open"


# -- a real uvicorn ----------------------------------------------------------------------------


def make_app(registry: CollectorRegistry, pipeline: SignalPipeline) -> Starlette:
    cb = AsyncCircuitBreaker(
        tripper=MinRequests(3) & FailureRate(0.5),
        retry=Cooldown(60.0),
        listeners=[PrometheusListener("upstream", registry, pipeline=pipeline)],
    )

    async def upstream(*, fail: bool) -> str:
        if fail:
            raise ConnectionError("upstream down")
        return "ok"

    async def pay(request: Request) -> PlainTextResponse:
        try:
            body = await cb.call(upstream, fail=request.query_params.get("fail") == "true")
        except CallNotPermittedError:
            return PlainTextResponse("open", status_code=503)
        except ConnectionError:
            return PlainTextResponse("failed", status_code=502)
        return PlainTextResponse(body)

    async def reset(_request: Request) -> PlainTextResponse:
        await cb.reset()
        return PlainTextResponse("reset")

    return Starlette(
        routes=[
            Route("/pay", pay),
            Route("/reset", reset, methods=["GET"]),
            Mount("/metrics", app=make_asgi_app(registry)),
        ],
        lifespan=lifespan(pipeline),
    )


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on 127.0.0.1 in a thread; yield its base URL.

    On exit, shut uvicorn down as Ctrl-C would (``should_exit``) and wait for it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during startup"
            assert time.monotonic() < deadline, "uvicorn did not start"
            thread.join(0.01)  # waits on the server thread, which ends only on failure
        host, port = sock.getsockname()
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


def state_key(name: str, state: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("circuit_breaker_state", (("circuit_name", name), ("state", state)))


def test_a_real_uvicorn_runs_the_lifespan_and_serves_metrics(registry):
    pipeline = SignalPipeline()
    with serving(make_app(registry, pipeline)) as base:
        assert pipeline.running  # the lifespan started the consumer
        assert [http_get(f"{base}/pay?fail=true")[0] for _ in range(3)] == [502, 502, 502]
        assert http_get(f"{base}/pay") == (503, "open")

        def metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return scrape(f"{base}/metrics")  # Starlette redirects to /metrics/; urllib follows

        poll(lambda: metrics().get(state_key("upstream", "open")) == 1.0)
        scraped = metrics()
    assert {state: scraped[state_key("upstream", state)] for state in ALL_STATES} == {
        state: (1.0 if state == "open" else 0.0) for state in ALL_STATES
    }
    assert {
        key: value
        for key, value in scraped.items()
        if key[0] == "circuit_breaker_state_transition_total"
    } == {  # one trip; the breaker's other own transitions at 0 since the listener's creation
        (
            "circuit_breaker_state_transition_total",
            (("circuit_name", "upstream"), ("new_state", new), ("old_state", old)),
        ): float((old, new) == ("closed", "open"))
        for old, new in OWN_TRANSITIONS
    }


def test_shutting_uvicorn_down_stops_the_consumer_and_applies_everything(registry):
    pipeline = SignalPipeline()
    with serving(make_app(registry, pipeline)) as base:
        assert [http_get(f"{base}/pay?fail=true")[0] for _ in range(3)] == [502, 502, 502]
        assert http_get(f"{base}/reset") == (200, "reset")
        assert pipeline.running
    assert not pipeline.running
    assert shown(registry, "upstream") == "closed"
    assert count(registry, "upstream", "closed", "open") == 1
    assert count(registry, "upstream", "open", "closed") == 1
