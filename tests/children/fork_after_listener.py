"""Listeners created, then the process forks: what ``gunicorn --preload`` does with an app.

Run by ``tests/integration/test_multiprocess.py`` as ``fork_after_listener.py SCENARIO``, with
``PROMETHEUS_MULTIPROC_DIR`` set (multiprocess mode) or not (single-process mode). Before
forking, circuit ``preloaded`` shows its initial ``closed`` and circuit ``tripped`` is open.

- ``forks``: one child by ``os.fork()``, which does nothing but exit; one by multiprocessing's
  ``fork`` context, which moves ``tripped`` to half-open; then the parent trips ``preloaded``.
- ``broken``: ``importlib.reload`` of the circuits' module first (its fork hooks must stay
  registered once), then the child cannot open its metric files (the directory is gone), so a
  fork hook fails: the fork must still work in both processes.

Prints one JSON line: the pids, and in single-process mode what each process's registry shows.
"""

import importlib
import json
import logging
import multiprocessing
import os
import sys
from pathlib import Path

from fluxgate.signal import Signal
from prometheus_client import REGISTRY

import fluxgate_stream._circuits
from fluxgate_stream import PrometheusListener

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(message)s")
scenario = sys.argv[1]
preloaded = PrometheusListener("preloaded")
tripped = PrometheusListener("tripped")
tripped(Signal("closed", "open", 0.0))


def view():
    """What this process's registry shows (single-process mode only: otherwise, the files)."""
    return {
        name: {
            state: REGISTRY.get_sample_value(
                "circuit_breaker_state", {"circuit_name": name, "state": state}
            )
            for state in ("closed", "open", "half_open")
        }
        for name in ("preloaded", "tripped")
    }


def probe(writer):
    tripped(Signal("open", "half_open", 0.0))
    os.write(writer, json.dumps(view()).encode())


if scenario == "forks":
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(writer, json.dumps(view()).encode())
        os._exit(0)
    first = json.loads(os.read(reader, 65536))
    assert os.waitpid(pid, 0)[1] == 0
    second = multiprocessing.get_context("fork").Process(target=probe, args=(writer,))
    second.start()
    second_view = json.loads(os.read(reader, 65536))
    second.join()
    assert second.exitcode == 0
    preloaded(Signal("closed", "open", 0.0))
    print(
        json.dumps(
            {
                "parent": os.getpid(),
                "children": [pid, second.pid],
                "views": [view(), first, second_view],
            }
        )
    )
elif scenario == "broken":
    importlib.reload(fluxgate_stream._circuits)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(
        Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) / "gone"
    )
    pid = os.fork()
    if pid == 0:
        print("child forked", file=sys.stderr, flush=True)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    preloaded(Signal("closed", "open", 0.0))  # the parent's files still work
    print(json.dumps({"parent": os.getpid(), "children": [pid]}))
