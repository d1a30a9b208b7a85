"""A multiprocess-mode worker whose metered calls a real Prometheus reads: ``K BACKEND``.

Run by ``tests/integration/test_calls_e2e.py`` with ``PROMETHEUS_MULTIPROC_DIR`` set and the
repository on ``PYTHONPATH``. Meters (and listens to) the breakers of
``tests/support/call_traffic.py``, which creates their series at 0 in this worker's files, prints
``{"pid": ..., "ready": true}`` and waits for a line on stdin, so that Prometheus holds the zeros
before any call. Then it makes the calls of ``make_calls(traffic, K)`` through a running
consumer, prints ``{"pid": ..., "done": true}`` and waits for a second line before it exits:
its breakers' state gauge counts only while it lives (the collector drops a dead worker's).
"""

import json
import os
import sys

import anyio

from fluxgate_stream import SignalPipeline
from fluxgate_stream._compat import multiprocess
from tests.support.call_traffic import make_breakers, make_calls

k, backend = int(sys.argv[1]), sys.argv[2]
assert multiprocess()
traffic = make_breakers(k, SignalPipeline())


def say(**what: object) -> None:
    print(json.dumps({"pid": os.getpid(), **what}), flush=True)


async def main() -> None:
    await make_calls(traffic, k)


say(ready=True)
sys.stdin.readline()
anyio.run(main, backend=backend)
say(done=True)
sys.stdin.readline()
