"""importlib.reload of our modules between listeners: no duplicate registration, series shared.

Run by ``tests/core/test_contract.py``; prints the before/after transition counts, one line per
registry (the custom one, then the default).
"""

import importlib
import sys

import fluxgate.listeners.prometheus as upstream
from fluxgate.signal import Signal
from prometheus_client import REGISTRY, CollectorRegistry

import fluxgate_stream

custom = CollectorRegistry()
fluxgate_stream.PrometheusListener("before", custom)(Signal("closed", "open", 0.0))
fluxgate_stream.PrometheusListener("before")(Signal("closed", "open", 0.0))
for name in sorted(m for m in sys.modules if m.startswith("fluxgate_stream")):
    importlib.reload(sys.modules[name])
fluxgate_stream.PrometheusListener("after", custom)(Signal("closed", "open", 0.0))
fluxgate_stream.PrometheusListener("after")(Signal("closed", "open", 0.0))
upstream.PrometheusListener("after")(Signal("closed", "open", 0.0))
for registry in (custom, REGISTRY):
    print(
        *(
            registry.get_sample_value(
                "circuit_breaker_state_transition_total",
                {"circuit_name": n, "old_state": "closed", "new_state": "open"},
            )
            for n in ("before", "after")
        )
    )
