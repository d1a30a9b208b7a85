"""A multiprocess-mode worker that meters calls: ``K BACKEND`` on its command line.

Run by ``tests/integration/test_multiprocess.py`` with ``PROMETHEUS_MULTIPROC_DIR`` set. Makes
``K + 1`` successful and ``K`` failed calls through a metered ``AnyioCircuitBreaker`` on the loop
thread (through the consumer), and as many through a metered ``CircuitBreaker`` from a worker
thread (the bridge), then prints one JSON line with its pid.
"""

import json
import os
import sys
from contextlib import suppress

import anyio
from fluxgate import CircuitBreaker
from fluxgate.trippers import FailureRate, MinRequests

from fluxgate_stream import AnyioCircuitBreaker, SignalPipeline, meter_calls
from fluxgate_stream._compat import multiprocess

k, backend = int(sys.argv[1]), sys.argv[2]
assert multiprocess()
pipeline = SignalPipeline(max_buffer_size=4)
never = MinRequests(10**9) & FailureRate(0.5)
async_cb = AnyioCircuitBreaker(tripper=never)
sync_cb = CircuitBreaker(tripper=never)
meter_calls(async_cb, "async", pipeline=pipeline, buckets=[0.5, 60])
meter_calls(sync_cb, "sync", pipeline=pipeline)


async def ok() -> None:
    pass


async def fail() -> None:
    raise ConnectionError


def sync_ok() -> None:
    pass


def sync_fail() -> None:
    raise ConnectionError


def sync_calls() -> None:
    for _ in range(k + 1):
        sync_cb.call(sync_ok)
    for _ in range(k):
        with suppress(ConnectionError):
            sync_cb.call(sync_fail)


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        for _ in range(k + 1):
            await async_cb.call(ok)
        for _ in range(k):
            with suppress(ConnectionError):
                await async_cb.call(fail)
        await anyio.to_thread.run_sync(sync_calls)
        await pipeline.flush()
        tg.cancel_scope.cancel()
    print(json.dumps({"pid": os.getpid()}), flush=True)


anyio.run(main, backend=backend)
