"""A signal handler that calls a listener while ``os.fork()`` runs its hooks (apply lock held).

Run by ``tests/core/test_signals.py``. A ``before`` hook registered ahead of fluxgate-stream's
runs after them (before-hooks run in reverse order), with the apply lock held: it raises SIGUSR1,
whose handler calls a listener (no consumer: deferred). Nothing else happens in the parent after
the fork: the deferred call must be applied by the fork's end. In multiprocess mode too (with
``PROMETHEUS_MULTIPROC_DIR`` set), where the circuits' fork hooks hold the lock as well. Prints
one JSON line.
"""

import json
import os
import signal

os.register_at_fork(before=lambda: signal.raise_signal(signal.SIGUSR1))  # ahead of ours

from fluxgate.signal import Signal  # noqa: E402  # after the hook above, on purpose
from prometheus_client import CollectorRegistry  # noqa: E402  # as above

from fluxgate_stream import (  # noqa: E402  # as above
    MultiProcessCollector,
    PrometheusListener,
    SignalPipeline,
)

registry = CollectorRegistry()
listener = PrometheusListener("forking", registry, pipeline=SignalPipeline())
armed = [True]


def on_usr1(_signum: int, _frame: object) -> None:
    if armed[0] and os.getpid() == parent:
        armed[0] = False
        listener(Signal("closed", "open", 0.0))


parent = os.getpid()
signal.signal(signal.SIGUSR1, on_usr1)
pid = os.fork()
if pid == 0:
    os._exit(0)
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # multiprocess mode: the files, merged
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
shown = registry.get_sample_value(
    "circuit_breaker_state", {"circuit_name": "forking", "state": "open"}
)  # read before anything else could run the deferred call
_, status = os.waitpid(pid, 0)
print(json.dumps({"fired": not armed[0], "open": shown}), flush=True)
