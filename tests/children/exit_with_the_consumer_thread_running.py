"""A script that exits with its ``ConsumerThread`` still running, signals still queued.

Run by ``tests/core/test_background.py`` as ``exit_with_the_consumer_thread_running.py BACKEND
[interrupted]``. Its own ``atexit`` hook, registered before the consumer's (hooks run
last-registered first), prints what the registry shows once the consumer's hook has stopped it:
``<trips> <state> <bridge>``. With ``interrupted``, a Ctrl-C (a real SIGINT, sent by the consumer
thread as its consumer starts) interrupts ``start()``, which the script catches and goes on.
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading

from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry

from fluxgate_stream import ConsumerThread, PrometheusListener, SignalPipeline


class Interrupting(SignalPipeline):
    """A pipeline whose consumer, as it starts, sends the main thread a SIGINT (Ctrl-C)."""

    async def run(self, **kwargs: object) -> None:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        await super().run(**kwargs)  # type: ignore[arg-type]  # task_status, as given


registry = CollectorRegistry()
interrupted = sys.argv[2:] == ["interrupted"]
# A long window, and no lone transitions: nothing is applied before the exit.
pipeline = (Interrupting if interrupted else SignalPipeline)(batch_window=60.0, lone=False)
listener = PrometheusListener("at_exit", registry, pipeline=pipeline)


def report() -> None:
    labels = {"circuit_name": "at_exit", "old_state": "closed", "new_state": "open"}
    trips = registry.get_sample_value("circuit_breaker_state_transition_total", labels)
    state = registry.get_sample_value(
        "circuit_breaker_state", {"circuit_name": "at_exit", "state": "open"}
    )
    print(trips, state, pipeline.stats()["bridge"], flush=True)


def produce() -> None:
    for _ in range(100):
        listener(Signal("closed", "open", 0.0))
        listener(Signal("open", "closed", 0.0))
    listener(Signal("closed", "open", 0.0))


atexit.register(report)
# Never stopped: the atexit hook does it.
consumer = ConsumerThread(pipeline, backend="trio" if sys.argv[1] == "trio" else "asyncio")
try:
    consumer.start()
except KeyboardInterrupt:
    assert interrupted  # start() was interrupted; the consumer started all the same
producer = threading.Thread(target=produce)
producer.start()
producer.join()
