"""fluxgate-stream: export fluxgate circuit-breaker state to Prometheus off the breaker's path.

Quick start:

    pipeline = SignalPipeline()
    cb = AsyncCircuitBreaker(listeners=[PrometheusListener("payment_api", pipeline=pipeline)])

    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)  # the single consumer
        ...
"""

from __future__ import annotations

from importlib.metadata import version as _version

from fluxgate_stream._catalogue import ALL_STATES
from fluxgate_stream._circuits import CircuitLimitError, limit_circuits
from fluxgate_stream.anyio_breaker import AnyioCircuitBreaker
from fluxgate_stream.health import HealthCollector, HealthWatch, watch
from fluxgate_stream.listener import PrometheusListener, QueueingListener
from fluxgate_stream.pipeline import SignalPipeline, default_pipeline
from fluxgate_stream.selfmetrics import PipelineMetrics, export_metrics
from fluxgate_stream.sink import SignalSink, StreamingListener, Transitions

__version__ = _version("fluxgate-stream")

__all__ = [
    "ALL_STATES",
    "AnyioCircuitBreaker",
    "CircuitLimitError",
    "HealthCollector",
    "HealthWatch",
    "PipelineMetrics",
    "PrometheusListener",
    "QueueingListener",
    "SignalPipeline",
    "SignalSink",
    "StreamingListener",
    "Transitions",
    "__version__",
    "default_pipeline",
    "export_metrics",
    "limit_circuits",
    "watch",
]
