"""``os.fork()`` while a consumer runs on another thread: the child's pipeline is stopped, usable.

Run by ``tests/core/test_fork.py`` as ``fork_with_a_running_consumer.py BACKEND``. The parent's
consumer runs on a thread of its own; the main thread blocks that loop (so signals stay queued in
the bridge and the overflow queue), queues more, and forks. Prints two JSON lines: the child's
report, then the parent's.
"""

import json
import os
import sys
import threading
from typing import Any

import anyio
from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry

from fluxgate_stream import PrometheusListener, SignalPipeline
from tests.support.metrics import count, shown

backend = sys.argv[1]
registry = CollectorRegistry()
pipeline = SignalPipeline(max_buffer_size=4)
listener = PrometheusListener("c", registry, pipeline=pipeline)
OPEN = Signal("closed", "open", 0.0)
CLOSE = Signal("open", "closed", 0.0)
BEFORE = 3  # applied in the parent before the fork
QUEUED = 10  # queued at the fork: 4 in the bridge, 6 in the overflow queue

running = threading.Event()
block = threading.Event()
blocked = threading.Event()
release = threading.Event()
finished = threading.Event()


async def consumer_main() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        running.set()
        await anyio.to_thread.run_sync(block.wait)
        await pipeline.flush()  # the BEFORE signals, sent from the main thread
        blocked.set()
        release.wait()  # blocks the loop: the consumer cannot take what is queued meanwhile
        await pipeline.flush()
        tg.cancel_scope.cancel()
    finished.set()


def errors(fn: Any) -> str | None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001  # reported, for the test to show
        return f"{type(exc).__name__}: {exc}"
    return None


def child() -> dict[str, Any]:
    out: dict[str, Any] = {
        "running": pipeline.running,
        "inherited": count(registry, "c", "closed", "open"),
        "stats": pipeline.stats(),
    }
    listener(OPEN)  # no consumer in the child: applied in the call
    out["direct"] = count(registry, "c", "closed", "open")
    out["flush"] = errors(lambda: anyio.run(pipeline.flush, backend=backend))

    async def consume() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            for _ in range(100):
                listener(OPEN)
            await anyio.to_thread.run_sync(lambda: [listener(CLOSE) for _ in range(50)])
            await pipeline.flush()
            out["consumed"] = [
                count(registry, "c", "closed", "open"),
                count(registry, "c", "open", "closed"),
            ]
            tg.cancel_scope.cancel()

    out["run"] = errors(lambda: anyio.run(consume, backend=backend))
    listener(CLOSE)
    out["after"] = [shown(registry, "c"), count(registry, "c", "open", "closed")]
    out["stats_after"] = pipeline.stats()
    return out


thread = threading.Thread(target=anyio.run, args=(consumer_main,), kwargs={"backend": backend})
thread.start()
running.wait()
for _ in range(BEFORE):
    listener(OPEN)  # the bridge (another thread than the loop's)
block.set()
blocked.wait()
for _ in range(QUEUED):
    listener(OPEN)
assert pipeline.stats()["queued"] == 4
pid = os.fork()
if pid == 0:
    print(json.dumps({"child": child()}), flush=True)
    sys.exit(0)  # a normal exit: the interpreter's shutdown must not hang either
release.set()
finished.wait()
thread.join()
_, status = os.waitpid(pid, 0)
parent = {
    "count": count(registry, "c", "closed", "open"),
    "stats": pipeline.stats(),
    "child_exit": os.waitstatus_to_exitcode(status),
}
print(json.dumps({"parent": parent}), flush=True)
