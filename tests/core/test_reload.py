"""importlib.reload of our modules, and a second app instance in the same process.

Neither may raise a duplicate-registration error, and every series must keep working: those of
objects created before the reload (whose circuits have applied high sequence numbers) and those
of objects created after it.
"""

from __future__ import annotations

import pytest
from fluxgate.signal import Signal
from prometheus_client import REGISTRY

from fluxgate_stream import PrometheusListener, SignalPipeline
from fluxgate_stream.selfmetrics import export_metrics
from fluxgate_stream.series import CircuitLimitError, limit_circuits

from ..support.helpers import Consumer
from ..support.metrics import count, shown
from ..support.processes import run_python

RELOAD_SCRIPT = r"""
import importlib, sys
import anyio
from fluxgate.signal import Signal
from prometheus_client import REGISTRY, CollectorRegistry
import fluxgate.listeners.prometheus as upstream
import fluxgate_stream
import fluxgate_stream.selfmetrics
import fluxgate_stream.series

custom = CollectorRegistry()
OPEN, HALF, CLOSE = (Signal(*t, 0.0) for t in [("closed", "open"), ("open", "half_open"),
                                               ("half_open", "closed")])
pipeline = fluxgate_stream.SignalPipeline()
old = {
    "custom": fluxgate_stream.PrometheusListener("kept", custom, pipeline=pipeline),
    "default": fluxgate_stream.PrometheusListener("reload_kept", pipeline=pipeline),
}
registries = {"custom": custom, "default": REGISTRY}
for listener in old.values():
    for _ in range(50):
        listener(OPEN)
        listener(HALF)
        listener(CLOSE)
    listener.close()  # the circuits have applied sequence numbers in the hundreds
fluxgate_stream.selfmetrics.export_metrics(pipeline, custom)
fluxgate_stream.selfmetrics.export_metrics(pipeline)
fluxgate_stream.series.limit_circuits(1, custom)
names = {"custom": "kept", "default": "reload_kept"}


def value(where, metric, **labels):
    return registries[where].get_sample_value(metric, labels)


def opens(where):
    return value(where, "circuit_breaker_state_transition_total", circuit_name=names[where],
                 old_state="closed", new_state="open")


def shown(where):
    ones = [s for s in ("closed", "open", "half_open") if value(
        where, "circuit_breaker_state", circuit_name=names[where], state=s) == 1.0]
    return ones[0] if len(ones) == 1 else ones


DEPENDENCIES = ["tally", "states", "series", "pipeline", "listener", "sink", "selfmetrics"]


def dependency_order(names):
    # Each module after those it imports from, the package last: every name is then rebound to
    # the new classes.
    rank = {f"fluxgate_stream.{m}": i for i, m in enumerate(DEPENDENCIES)}
    return sorted(names, key=lambda name: (name == "fluxgate_stream", rank.get(name, 99), name))


# Alphabetical order leaves the package (reloaded first) and some modules with the previous
# classes: objects of both generations meet, and must still work together.
for round, order in enumerate([dependency_order, sorted], start=1):
    for name in order(m for m in sys.modules if m.startswith("fluxgate_stream")):
        importlib.reload(sys.modules[name])
    # Objects from before the reload keep working.
    for where, listener in old.items():
        listener(OPEN)
        assert opens(where) == round, (where, opens(where))
        assert shown(where) == "open", (where, shown(where))
    # Objects made after it share the same series, through a consumer of the new classes.
    fresh = fluxgate_stream.SignalPipeline(max_buffer_size=7)
    new = fluxgate_stream.PrometheusListener("kept", custom, pipeline=fresh)
    async def main():
        async with anyio.create_task_group() as tg:
            await tg.start(fresh.run)
            new(HALF)
            await fresh.flush()
            tg.cancel_scope.cancel()
    anyio.run(main)
    assert shown("custom") == "half_open", shown("custom")
    # Exporting again takes over the name; no duplicate registration.
    fluxgate_stream.selfmetrics.export_metrics(fresh, custom)
    fluxgate_stream.selfmetrics.export_metrics(fresh)
    for where in registries:
        assert value(where, "fluxgate_stream_buffer_size", pipeline="default") == 7.0
    # The cap survives the reload.
    try:
        fluxgate_stream.PrometheusListener("one_too_many", custom)
    except ValueError as exc:
        assert type(exc).__name__ == "CircuitLimitError", exc
    else:
        raise AssertionError("the cap was lost in the reload")
    # Upstream's listener on the default registry still shares the series.
    upstream.PrometheusListener("reload_kept")(HALF)
    assert shown("default") == "half_open"
print("ok")
"""


def test_reloading_every_module_twice_keeps_old_and_new_objects_working():
    # In a child process: a reload leaves two copies of every class behind it.
    result = run_python("-c", RELOAD_SCRIPT, warnings_as_errors=True)
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
