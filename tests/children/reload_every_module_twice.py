"""importlib.reload of every fluxgate_stream module, twice: objects old and new keep working.

Run by ``tests/core/test_reload.py`` (a reload leaves two copies of every class behind it, so not
in the test session); prints ``ok``.
"""

import importlib
import sys

import anyio
import fluxgate.listeners.prometheus as upstream
from fluxgate import CircuitBreaker
from fluxgate.signal import Signal
from prometheus_client import REGISTRY, CollectorRegistry

import fluxgate_stream
import fluxgate_stream._circuits
import fluxgate_stream._queue
import fluxgate_stream.selfmetrics

custom = CollectorRegistry()
OPEN, HALF, CLOSE = (
    Signal(*t, 0.0)  # pyright: ignore[reportArgumentType]  # literal states
    for t in [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
)
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
fluxgate_stream._circuits.limit_circuits(1, custom)
names = {"custom": "kept", "default": "reload_kept"}
metered = CircuitBreaker()  # metered before the reloads, on the default registry
fluxgate_stream.meter_calls(metered, "reload_calls", pipeline=pipeline)
metered.call(lambda: None)
wake = fluxgate_stream._queue.WAKE  # a wake-up queued before a reload is still dropped by identity


def value(where, metric, **labels):
    return registries[where].get_sample_value(metric, labels)


def opens(where):
    return value(
        where,
        "circuit_breaker_state_transition_total",
        circuit_name=names[where],
        old_state="closed",
        new_state="open",
    )


def shown(where):
    ones = [
        s
        for s in ("closed", "open", "half_open")
        if value(where, "circuit_breaker_state", circuit_name=names[where], state=s) == 1.0
    ]
    return ones[0] if len(ones) == 1 else ones


DEPENDENCIES = [
    "_catalogue",
    "_compat",
    "_checks",
    "_apply",
    "time_in_state",
    "_queue",
    "_circuits",
    "pipeline",
    "listener",
    "sink",
    "health",
    "selfmetrics",
]


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
    assert fluxgate_stream._queue.WAKE is wake
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

    # A meter from before the reload keeps counting, through a consumer on its own pipeline
    # (its calls on the loop thread go through its queue, of the class before the reload); one
    # made after it shares the series (no duplicate registration).
    async def old_meter():
        async with anyio.create_task_group() as tg:
            await tg.start(pipeline.run)
            metered.call(lambda: None)
            await pipeline.flush()
            tg.cancel_scope.cancel()

    anyio.run(old_meter)
    again = CircuitBreaker()
    with fluxgate_stream.meter_calls(again, f"reload_calls_{round}", pipeline=fresh):
        again.call(lambda: None)
    successful = {"circuit_name": "reload_calls", "kind": "successful"}
    assert value("default", "circuit_breaker_calls_total", **successful) == 1 + round
    # Exporting again takes over the name; no duplicate registration.
    fluxgate_stream.selfmetrics.export_metrics(fresh, custom)
    fluxgate_stream.selfmetrics.export_metrics(fresh)
    for where in registries:
        assert value(where, "fluxgate_stream_buffer_size", pipeline="default") == 7.0
    # The cap survives the reload.
    try:
        fluxgate_stream.PrometheusListener("one_too_many", custom)
    except ValueError as exc:
        assert type(exc).__name__ == "CircuitLimitError", exc  # noqa: PT017  # no pytest here
    else:
        raise AssertionError("the cap was lost in the reload")
    # Upstream's listener on the default registry still shares the series.
    upstream.PrometheusListener("reload_kept")(HALF)
    assert shown("default") == "half_open"
print("ok")
