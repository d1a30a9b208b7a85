"""Helpers for driving a pipeline in tests: a consumer to start and stop, deadline polling."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

from fluxgate_stream import SignalPipeline


class Abort(BaseException):
    """Neither an ``Exception`` nor cancellation: like ``KeyboardInterrupt`` or ``SystemExit``.

    Those escape the event loop itself on asyncio; this stand-in takes the same ways through the
    library and stays inside the test.
    """


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` between checkpoints until it holds; fail after ``within`` seconds."""
    with anyio.fail_after(within):
        while not predicate():
            await checkpoint()


def in_thread(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn`` in a plain thread and wait for it, blocking the event loop meanwhile.

    Blocking the loop is the point: the consumer cannot run while the thread produces.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001  # re-raised below, on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


class Consumer:
    """A pipeline consumer that a test can start and stop repeatedly inside its own task."""

    def __init__(self, pipeline: SignalPipeline) -> None:
        self.pipeline = pipeline
        self._group: Any = None

    async def start(self) -> None:
        assert self._group is None
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        await self._group.start(self.pipeline.run)

    async def stop(self) -> None:
        assert self._group is not None
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)
        self._group = None

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._group is not None:
            await self.stop()
