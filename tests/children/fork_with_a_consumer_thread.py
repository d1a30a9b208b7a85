"""Fork while a ``ConsumerThread`` runs: in the child it is stopped, the parent's keeps working.

Run by ``tests/core/test_background.py`` as ``fork_with_a_consumer_thread.py BACKEND``. The
child prints what its copy says (``child running=... stopped-in=...``) and exits with
``os._exit``; the parent then checks that its own consumer still queues and applies, and prints
``parent <state> <bridge>``.
"""

from __future__ import annotations

import os
import sys
import time

from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry

from fluxgate_stream import ConsumerThread, PrometheusListener, SignalPipeline

registry = CollectorRegistry()
# lone=False: the parent's signal after the fork goes over the bridge, so its consumer must be
# the one that applies it (a lone signal would be applied in the call).
pipeline = SignalPipeline(lone=False)
listener = PrometheusListener("forked", registry, pipeline=pipeline)
consumer = ConsumerThread(pipeline, backend="trio" if sys.argv[1] == "trio" else "asyncio")
consumer.start()

pid = os.fork()
if pid == 0:  # the child: no consumer thread came along
    began = time.monotonic()
    running = consumer.running
    # returns at once: nothing to join, nothing sent to the parent's loop (a stop that waited
    # would take the whole timeout, 30 s; a loaded machine can still take a second)
    consumer.stop(timeout=30)
    consumer.flush()  # likewise
    print(
        f"child running={running} stop-took-under-10s={time.monotonic() - began < 10}", flush=True
    )
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
listener(Signal("closed", "open", 0.0))  # the main thread is not the loop's: over the bridge
consumer.flush(timeout=10)
state = registry.get_sample_value(
    "circuit_breaker_state", {"circuit_name": "forked", "state": "open"}
)
print(f"parent {state} {pipeline.stats()['bridge']} {consumer.running}", flush=True)
consumer.stop()
