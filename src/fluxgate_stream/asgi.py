"""ASGI apps (FastAPI, Starlette, ...): run the pipeline's consumer for the app's lifetime.

``lifespan(pipeline)`` is a ready-made ``lifespan=`` for Starlette and FastAPI: it starts the
consumer when the server starts the app, and at shutdown stops it, which applies everything still
queued. Serve the metrics with ``prometheus_client.make_asgi_app()``:

    from fastapi import FastAPI
    from prometheus_client import make_asgi_app

    from fluxgate_stream.asgi import lifespan

    app = FastAPI(lifespan=lifespan())  # the default pipeline, which listeners use by default
    app.mount("/metrics", make_asgi_app())

To combine it with a lifespan of your own, enter ``running(pipeline)`` in yours.

This module imports no web framework: it only needs anyio, so it works under any ASGI server
and on asyncio or trio.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from fluxgate_stream.pipeline import SignalPipeline, resolve_pipeline

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

__all__ = ["lifespan", "running"]


@asynccontextmanager
async def running(pipeline: SignalPipeline | None = None) -> AsyncGenerator[SignalPipeline]:
    """Run ``pipeline``'s consumer (default: ``default_pipeline()``) while the block runs.

    On leaving the block, however it is left, the consumer stops; stopping applies every signal
    still queued, so the metrics are complete when this returns. Must be entered and left by the
    same task, as Starlette and FastAPI do with a lifespan.

    Args:
        pipeline: the pipeline whose consumer to run; ``None`` means ``default_pipeline()``.

    Yields:
        The pipeline whose consumer runs.

    Raises:
        TypeError: ``pipeline`` is neither ``None`` nor a ``SignalPipeline``.
        RuntimeError: the pipeline's consumer is already running (another app, or another
            ``running()``, owns it).

    Example:
        >>> import anyio
        >>> from prometheus_client import CollectorRegistry
        >>> from fluxgate.signal import Signal
        >>> from fluxgate_stream import PrometheusListener, SignalPipeline
        >>> registry, pipeline = CollectorRegistry(), SignalPipeline()
        >>> listener = PrometheusListener("api", registry, pipeline=pipeline)
        >>> async def serve() -> None:
        ...     async with running(pipeline):
        ...         listener(Signal(old_state="closed", new_state="open", timestamp=0.0))
        >>> anyio.run(serve)
        >>> registry.get_sample_value(
        ...     "circuit_breaker_state", {"circuit_name": "api", "state": "open"}
        ... )
        1.0
    """
    consumer = resolve_pipeline(pipeline)
    if consumer.running:  # checked here too, so the error is not wrapped in an ExceptionGroup
        raise RuntimeError("this SignalPipeline's consumer is already running")
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        await group.start(consumer.run)
        try:
            yield consumer
        except Exception as error:  # noqa: BLE001  # re-raised below, outside the task group
            failure = error
        finally:
            group.cancel_scope.cancel()
    if failure is not None:
        # Raised from outside the task group, the block's own error is not wrapped in an
        # ExceptionGroup. Cancellation and KeyboardInterrupt pass through the group as usual.
        raise failure


def lifespan(
    pipeline: SignalPipeline | None = None,
) -> Callable[[object], AbstractAsyncContextManager[None]]:
    """A Starlette/FastAPI ``lifespan=`` that runs ``pipeline``'s consumer while the app runs.

    ``FastAPI(lifespan=lifespan())`` or ``Starlette(lifespan=lifespan(pipeline))``. At shutdown
    the consumer stops and applies everything still queued, so a final scrape sees it all.

    Args:
        pipeline: the pipeline whose consumer to run; ``None`` means ``default_pipeline()``,
            the one listeners created without ``pipeline=`` use.

    Returns:
        A function of the app returning an async context manager, as Starlette expects. The
        context manager raises ``RuntimeError`` on entry if the consumer is already running.

    Raises:
        TypeError: ``pipeline`` is neither ``None`` nor a ``SignalPipeline`` (here, not when
            the app starts).
    """
    if pipeline is not None:
        resolve_pipeline(pipeline)

    @asynccontextmanager
    async def app_lifespan(_app: object) -> AsyncGenerator[None]:
        async with running(pipeline):
            yield

    return app_lifespan
