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
from types import FunctionType

from fluxgate_stream._catalogue import ALL_STATES
from fluxgate_stream._circuits import CircuitLimitError, limit_circuits
from fluxgate_stream.anyio_breaker import AnyioCircuitBreaker
from fluxgate_stream.background import ConsumerThread
from fluxgate_stream.calls import CallMeter, meter_calls
from fluxgate_stream.health import HealthCollector, HealthWatch, watch
from fluxgate_stream.listener import PrometheusListener, QueueingListener
from fluxgate_stream.multiprocess import MultiProcessCollector
from fluxgate_stream.pipeline import PipelineStatistics, SignalPipeline, default_pipeline
from fluxgate_stream.selfmetrics import PipelineMetrics, export_metrics
from fluxgate_stream.sink import SignalSink, StreamingListener, Transitions
from fluxgate_stream.threadsafe_breaker import ThreadSafeCircuitBreaker

__version__ = _version("fluxgate-stream")

__all__ = [
    "ALL_STATES",
    "AnyioCircuitBreaker",
    "CallMeter",
    "CircuitLimitError",
    "ConsumerThread",
    "HealthCollector",
    "HealthWatch",
    "MultiProcessCollector",
    "PipelineMetrics",
    "PipelineStatistics",
    "PrometheusListener",
    "QueueingListener",
    "SignalPipeline",
    "SignalSink",
    "StreamingListener",
    "ThreadSafeCircuitBreaker",
    "Transitions",
    "__version__",
    "default_pipeline",
    "export_metrics",
    "limit_circuits",
    "meter_calls",
    "watch",
]


def _fix_module_metadata() -> None:
    """Give every public class and function ``__module__ = "fluxgate_stream"``, as trio does.

    They are documented, imported and shown (reprs, tracebacks) under the package, whatever
    module defines them; the modules behind them are free to move.
    """
    namespace = globals()
    for name in __all__:
        value = namespace[name]
        if isinstance(value, type | FunctionType) and value.__module__.startswith(__name__ + "."):
            value.__module__ = __name__


_fix_module_metadata()
