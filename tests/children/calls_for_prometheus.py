"""A multiprocess-mode worker whose metered calls a real Prometheus reads: ``K BACKEND``.

Run by ``tests/integration/test_calls_e2e.py`` with ``PROMETHEUS_MULTIPROC_DIR`` set. Meters two
``AnyioCircuitBreaker``s (buckets 0.25 s and 10 s), which creates their series at 0 in this
worker's files, prints ``{"pid": ..., "ready": true}`` and waits for a line on stdin, so that
Prometheus holds the zeros before any call. Then, through a running consumer: ``payment_api``
makes ``3K`` successful and ``2K`` failed calls (the last trips it by its failure rate) and
``4K`` refused ones; ``search_api``, whose tripper never trips, ``3K`` and ``2K``. It prints
``{"pid": ..., "done": true}`` and exits.
"""

import json
import os
import sys
from contextlib import suppress

import anyio
from fluxgate.errors import CallNotPermittedError
from fluxgate.retries import Never
from fluxgate.trippers import FailureRate, MinRequests

from fluxgate_stream import AnyioCircuitBreaker, SignalPipeline, meter_calls
from fluxgate_stream._compat import multiprocess

k, backend = int(sys.argv[1]), sys.argv[2]
assert multiprocess()
BUCKETS = (0.25, 10.0)
pipeline = SignalPipeline()
payment = AnyioCircuitBreaker(tripper=MinRequests(5 * k) & FailureRate(0.4), retry=Never())
search = AnyioCircuitBreaker(tripper=MinRequests(10**9) & FailureRate(0.5))
meter_calls(payment, "payment_api", pipeline=pipeline, buckets=BUCKETS)
meter_calls(search, "search_api", pipeline=pipeline, buckets=BUCKETS)


def say(**what: object) -> None:
    print(json.dumps({"pid": os.getpid(), **what}), flush=True)


async def ok() -> None:
    pass


async def fail() -> None:
    raise ConnectionError


async def main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        for cb in (payment, search):
            for _ in range(3 * k):
                await cb.call(ok)
            for _ in range(2 * k):
                with suppress(ConnectionError):
                    await cb.call(fail)
        assert payment.info().state == "open"
        assert search.info().state == "closed"
        for _ in range(4 * k):
            with suppress(CallNotPermittedError):
                await payment.call(ok)
        await pipeline.flush()
        tg.cancel_scope.cancel()


say(ready=True)
sys.stdin.readline()
anyio.run(main, backend=backend)
say(done=True)
