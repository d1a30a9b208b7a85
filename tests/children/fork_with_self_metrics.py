"""Self-metrics in multiprocess mode across ``os.fork()``: each process publishes its own counts.

Run by ``tests/integration/test_multiprocess.py`` with ``PROMETHEUS_MULTIPROC_DIR`` set. The
parent applies 5 signals directly, then forks, as a ``gunicorn --preload`` master does (it never
publishes: its publisher would run in the workers); the child applies 2 and publishes; the
parent, after the child has exited, applies 1 more and publishes. Summed over the two processes'
files, ``fluxgate_stream_signals_total{path="direct"}`` must read 8: the 5 the parent applied,
counted once. Prints one JSON line.
"""

import json
import os

from fluxgate.signal import Signal

from fluxgate_stream import PrometheusListener, SignalPipeline, export_metrics

OPEN, CLOSE = Signal("closed", "open", 0.0), Signal("open", "closed", 0.0)
pipeline = SignalPipeline()
listener = PrometheusListener("forked", pipeline=pipeline)
metrics = export_metrics(pipeline, name="forked")
for each in (OPEN, CLOSE, OPEN, CLOSE, OPEN):
    listener(each)

pid = os.fork()
if pid == 0:
    listener(CLOSE)
    listener(OPEN)
    metrics.publish()
    os._exit(0)
_, status = os.waitpid(pid, 0)
listener(CLOSE)
metrics.publish()
print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status)}), flush=True)
