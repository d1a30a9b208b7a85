"""A multiprocess-mode worker: time_in_state=True is refused; the plain listener still works.

Run by ``tests/core/test_time_in_state.py`` with ``PROMETHEUS_MULTIPROC_DIR`` set; prints the
refusal as one JSON line.
"""

import json

from fluxgate_stream import PrometheusListener

try:
    PrometheusListener("c", time_in_state=True)
except RuntimeError as error:
    print(json.dumps({"error": str(error)}))
PrometheusListener("c")
