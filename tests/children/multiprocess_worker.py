"""A multiprocess-mode worker: a pipeline on its backend writes, then obeys its test on stdin.

Run by ``tests/integration/test_multiprocess.py`` as ``multiprocess_worker.py K FINAL BACKEND`` with
``PROMETHEUS_MULTIPROC_DIR`` set. It says ``ready`` (a JSON line) once its signals are written, then
reads ``close`` (close the shared circuit, say ``closed``) or ``exit`` from stdin.
"""

import json
import os
import sys

import anyio
from fluxgate.signal import Signal

from fluxgate_stream import PrometheusListener, SignalPipeline
from fluxgate_stream._compat import multiprocess
from fluxgate_stream.selfmetrics import export_metrics

k, final, backend = int(sys.argv[1]), sys.argv[2], sys.argv[3]
assert multiprocess()
pipeline = SignalPipeline(max_buffer_size=4)
shared = PrometheusListener("shared", pipeline=pipeline)
own = PrometheusListener(f"w{k}", pipeline=pipeline)
metrics = export_metrics(pipeline)


def cycles(listener, n):
    for _ in range(n):
        listener(Signal("closed", "open", 0.0))
        listener(Signal("open", "half_open", 0.0))
        listener(Signal("half_open", "closed", 0.0))


def say(**what):
    print(json.dumps({"pid": os.getpid(), **what}), flush=True)


async def main():
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        await tg.start(lambda task_status: metrics.run(interval=3600, task_status=task_status))
        cycles(shared, 10 + k)  # on the loop thread
        await anyio.to_thread.run_sync(cycles, own, 5)  # from a worker thread
        shared(Signal("closed", final, 0.0))  # pyright: ignore[reportArgumentType]  # argv: a state
        await pipeline.flush()
        metrics.publish()
        say(ready=True)
        while command := (await anyio.to_thread.run_sync(sys.stdin.readline)).strip():
            if command == "close":
                shared.close()
                await pipeline.flush()
                metrics.publish()
                say(closed=True)
            elif command == "exit":
                break
        tg.cancel_scope.cancel()


anyio.run(main, backend=backend)
