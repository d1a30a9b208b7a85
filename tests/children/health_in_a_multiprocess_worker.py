"""A multiprocess-mode worker: watch() refuses, and a collector of its own is never merged.

Run by ``tests/breakers/test_health.py`` with ``PROMETHEUS_MULTIPROC_DIR`` set; prints one JSON
line.
"""

import json

from fluxgate import CircuitBreaker
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from fluxgate_stream._compat import multiprocess
from fluxgate_stream.health import HealthCollector, watch

out: dict[str, bool | str] = {"multiprocess": multiprocess()}
cb = CircuitBreaker()
try:
    watch(cb, "payment_api")
except RuntimeError as error:
    out["error"] = str(error)
Counter("worker_requests", "Requests this worker served").inc()
cb.call(lambda: None)
own = CollectorRegistry()
health = HealthCollector()
own.register(health)
health.watch(cb, "payment_api")
out["own"] = generate_latest(own).decode()
merged = CollectorRegistry()  # what a multiprocess /metrics endpoint serves
MultiProcessCollector(merged)
out["merged"] = generate_latest(merged).decode()
print(json.dumps(out))
