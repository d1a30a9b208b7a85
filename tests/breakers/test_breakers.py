"""fluxgate's real breakers feeding the pipeline on asyncio and trio, on the loop and in threads."""

from __future__ import annotations

import threading

import anyio
import pytest

from fluxgate_stream import PrometheusListener, SignalPipeline

from ..support.breakers import Recorder, adrive, async_breaker, drive, sync_breaker
from ..support.helpers import Consumer
from ..support.metrics import count, shown

pytestmark = pytest.mark.anyio

PATTERN = "xx.x" * 50 + "xx..xxx.x"


def assert_matches(registry, name: str, recorder: Recorder) -> None:
    assert recorder.signals, "the breaker never changed state: the test proves nothing"
    for (old, new), n in recorder.counts().items():
        assert count(registry, name, old, new) == float(n), (old, new)
    assert shown(registry, name) == recorder.signals[-1].new_state


async def test_sync_breaker_on_the_loop_thread(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=16)
    recorder = Recorder()
    cb = sync_breaker(PrometheusListener("loop", registry, pipeline=pipeline), recorder)
    async with Consumer(pipeline):
        drive(cb, PATTERN)
        await pipeline.flush()
        assert_matches(registry, "loop", recorder)


async def test_sync_breakers_in_worker_threads(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=8)
    recorders = [Recorder() for _ in range(4)]
    breakers = [
        sync_breaker(PrometheusListener(f"worker{i}", registry, pipeline=pipeline), recorders[i])
        for i in range(4)
    ]
    async with Consumer(pipeline):
        async with anyio.create_task_group() as tg:
            for cb in breakers:
                tg.start_soon(anyio.to_thread.run_sync, drive, cb, PATTERN * 5)
        plain = threading.Thread(target=drive, args=(breakers[0], "xx.x"))
        plain.start()
        await anyio.to_thread.run_sync(plain.join)
        await pipeline.flush()
        for i in range(4):
            assert_matches(registry, f"worker{i}", recorders[i])


@pytest.mark.parametrize(
    "anyio_backend", ["asyncio"]
)  # fluxgate's AsyncCircuitBreaker is asyncio-only
async def test_async_breaker_on_asyncio(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=16)
    recorder = Recorder()
    cb = async_breaker(PrometheusListener("async", registry, pipeline=pipeline), recorder)
    async with Consumer(pipeline):
        await adrive(cb, PATTERN)
        await cb.force_open()
        await pipeline.flush()
        assert_matches(registry, "async", recorder)
        assert shown(registry, "async") == "forced_open"


def test_sync_breaker_in_a_plain_script_applies_directly(registry):
    recorder = Recorder()
    cb = sync_breaker(PrometheusListener("script", registry, pipeline=SignalPipeline()), recorder)
    drive(cb, PATTERN)
    assert_matches(registry, "script", recorder)
