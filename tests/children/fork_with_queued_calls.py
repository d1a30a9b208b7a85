"""``os.fork()`` on the loop thread with metered calls queued in a meter's ``CallQueue``.

Run by ``tests/core/test_fork.py`` as ``fork_with_queued_calls.py BACKEND``. The consumer runs on
the main thread; five calls are made there and not yet taken when the main thread forks. The
child (which must not use the parent's event loop) makes two calls with no consumer, then starts
a consumer on a thread of its own and makes three more there. Prints two JSON lines: the child's
report, then the parent's.
"""

import json
import os
import sys
import threading
from typing import Any

import anyio
from fluxgate import CircuitBreaker
from prometheus_client import CollectorRegistry

from fluxgate_stream import SignalPipeline, meter_calls

backend = sys.argv[1]
registry = CollectorRegistry()
pipeline = SignalPipeline()
cb = CircuitBreaker()
meter_calls(cb, "c", registry, pipeline=pipeline)


def ok() -> str:
    return "ok"


def successful() -> float | None:
    return registry.get_sample_value(
        "circuit_breaker_calls_total", {"circuit_name": "c", "kind": "successful"}
    )


def child() -> dict[str, Any]:
    out: dict[str, Any] = {"inherited": successful()}
    for _ in range(2):
        cb.call(ok)  # no consumer in the child: applied in the call
    out["direct"] = successful()

    async def consume() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            for _ in range(3):
                cb.call(ok)  # on the new consumer's thread: through the meter's CallQueue
            await pipeline.flush()
            out["flushed"] = successful()
            tg.cancel_scope.cancel()
        out["stopped"] = successful()

    thread = threading.Thread(target=anyio.run, args=(consume,), kwargs={"backend": backend})
    thread.start()
    thread.join()
    return out


async def main() -> int:
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        await pipeline.flush()  # the series at 0
        for _ in range(5):
            cb.call(ok)  # queued: the consumer cannot take them before the next await
        pid = os.fork()
        if pid == 0:
            print(json.dumps({"child": child()}), flush=True)
            os._exit(0)
        await pipeline.flush()
        tg.cancel_scope.cancel()
    return pid


child_pid = anyio.run(main, backend=backend)
_, status = os.waitpid(child_pid, 0)
print(json.dumps({"parent": {"count": successful(), "child_exit": status}}), flush=True)
