"""importlib.reload of our modules, and a second app instance in the same process.

Neither may raise a duplicate-registration error, and every series must keep working: those of
objects created before the reload (whose circuits have applied high sequence numbers) and those
of objects created after it.
"""

from __future__ import annotations

import pytest
from fluxgate.signal import Signal
from prometheus_client import REGISTRY

from fluxgate_stream import CircuitLimitError, PrometheusListener, SignalPipeline, limit_circuits
from fluxgate_stream.selfmetrics import export_metrics

from ..support.helpers import Consumer
from ..support.metrics import count, shown
from ..support.processes import CHILDREN, run_python


def test_reloading_every_module_twice_keeps_old_and_new_objects_working():
    # In a child process: a reload leaves two copies of every class behind it.
    result = run_python(CHILDREN / "reload_every_module_twice.py", warnings_as_errors=True)
    assert result.stdout == "ok\n"


def app(registry, names: list[str]) -> tuple[SignalPipeline, list[PrometheusListener]]:
    """What an app does when it starts: its pipeline, listeners, self-metrics, cap."""
    pipeline = SignalPipeline(max_buffer_size=16)
    listeners = [PrometheusListener(name, registry, pipeline=pipeline) for name in names]
    export_metrics(pipeline, registry)
    limit_circuits(10, registry)
    return pipeline, listeners


@pytest.mark.anyio
async def test_a_second_app_instance_in_the_same_process(anyio_backend, registry):
    first, (a1, b1) = app(registry, ["a", "b"])
    async with Consumer(first):
        a1(Signal("closed", "open", 0.0))
        b1(Signal("closed", "open", 0.0))
    second, (a2, _) = app(registry, ["a", "b"])  # the same names, the same registry
    assert a2._target is a1._target
    async with Consumer(second):
        a2(Signal("open", "half_open", 0.0))
        await second.flush()
    assert (shown(registry, "a"), shown(registry, "b")) == ("half_open", "open")
    assert count(registry, "a", "closed", "open") == 1.0
    assert registry.get_sample_value("fluxgate_stream_buffer_size", {"pipeline": "default"}) == 16
    assert registry.get_sample_value(
        "fluxgate_stream_signals_total", {"pipeline": "default", "path": "direct"}
    ) == float(second.stats()["direct"])


def test_a_second_app_instance_on_the_default_registry():
    collector = None
    try:
        for _ in range(2):
            _, (listener,) = app(None, ["second_instance_default"])
            collector = REGISTRY._names_to_collectors["fluxgate_stream_queue_depth"]
            listener(Signal("closed", "open", 0.0))
        assert count(REGISTRY, "second_instance_default", "closed", "open") == 2.0
        known = 0
        with pytest.raises(CircuitLimitError):  # noqa: PT012  # the 11th new name is refused
            for known in range(20):  # read after the loop
                PrometheusListener(f"second_instance_default_{known}")
        assert known <= 10
    finally:
        limit_circuits(None)
        PrometheusListener("second_instance_default").close()
        if collector is not None:
            REGISTRY.unregister(collector)
