"""Self-metrics: the pipeline's own counters, read from ``stats()`` when the registry is scraped."""

from __future__ import annotations

import gc
import re
import threading

import anyio
import pytest
from fluxgate.signal import Signal
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest

from fluxgate_stream import PrometheusListener, SignalPipeline, StreamingListener, Transitions
from fluxgate_stream._apply import APPLY_LOCK
from fluxgate_stream.selfmetrics import PipelineMetrics, export_metrics

from ..support.helpers import Consumer, in_thread, wait_until

pytestmark = pytest.mark.anyio

OPEN = Signal("closed", "open", 0.0)


def value(registry: CollectorRegistry, metric: str, pipeline: str = "default", **labels: str):
    return registry.get_sample_value(metric, {"pipeline": pipeline, **labels})


def exported(registry: CollectorRegistry, pipeline: str = "default") -> dict[str, float | None]:
    """Every self-metric of ``pipeline``, keyed like ``stats()``."""
    out = {
        path: value(registry, "fluxgate_stream_signals_total", pipeline, path=path)
        for path in ("stream", "bridge", "overflow", "direct")
    }
    for key, metric in [
        ("wakeups", "fluxgate_stream_wakeups_total"),
        ("batches", "fluxgate_stream_batches_total"),
        ("apply_errors", "fluxgate_stream_apply_errors_total"),
        ("queued", "fluxgate_stream_queue_depth"),
        ("running", "fluxgate_stream_consumer_running"),
        ("buffer_size", "fluxgate_stream_buffer_size"),
    ]:
        out[key] = value(registry, metric, pipeline)
    return out


class Broken:
    def write(self, transitions: Transitions) -> None:
        raise RuntimeError(f"{transitions.name} is broken")


async def test_self_metrics_follow_stats_on_every_path(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=4, lone=False)  # exact counts by path, below
    listener = PrometheusListener("api", registry, pipeline=pipeline)
    broken = StreamingListener("broken", Broken(), pipeline=pipeline)
    metrics = export_metrics(pipeline, registry)
    assert isinstance(metrics, PipelineMetrics)
    assert exported(registry) == dict.fromkeys(exported(registry), 0.0) | {"buffer_size": 4.0}

    listener(OPEN)  # no consumer: direct
    async with Consumer(pipeline):
        assert value(registry, "fluxgate_stream_consumer_running") == 1.0
        await wait_until(lambda: pipeline._state.sleeping)
        in_thread(lambda: [listener(OPEN) for _ in range(10)])  # 4 bridge, then overflow
        assert value(registry, "fluxgate_stream_queue_depth") == 4.0  # read while queued
        for _ in range(6):
            listener(OPEN)  # overflow: until the consumer takes the ledger, newer ones wait
        await pipeline.flush()
        listener(OPEN)
        listener(OPEN)
        broken(OPEN)  # stream, and a write that fails
        await pipeline.flush()
        assert value(registry, "fluxgate_stream_queue_depth") == 0.0
    stats = pipeline.stats() | {"buffer_size": 4}
    assert exported(registry) == {key: float(n) for key, n in stats.items()}
    assert (stats["direct"], stats["bridge"], stats["overflow"], stats["stream"]) == (1, 4, 12, 3)
    assert stats["wakeups"] >= 1
    assert stats["batches"] >= 3
    assert stats["apply_errors"] == 1
    assert stats["running"] == 0
    text = generate_latest(registry).decode()
    assert "# TYPE fluxgate_stream_signals_total counter" in text
    assert "# TYPE fluxgate_stream_queue_depth gauge" in text
    assert 'fluxgate_stream_signals_total{path="bridge",pipeline="default"} 4.0' in text


def test_exporting_is_idempotent_and_the_latest_pipeline_takes_over_a_name(registry):
    first, second = SignalPipeline(max_buffer_size=1), SignalPipeline(max_buffer_size=2)
    export_metrics(first, registry)
    export_metrics(first, registry)
    assert value(registry, "fluxgate_stream_buffer_size") == 1.0
    export_metrics(second, registry)  # a second app instance: no duplicate registration
    assert value(registry, "fluxgate_stream_buffer_size") == 2.0
    export_metrics(first, registry, name="other")
    assert value(registry, "fluxgate_stream_buffer_size", "other") == 1.0
    assert value(registry, "fluxgate_stream_buffer_size") == 2.0


def test_a_pipeline_that_is_garbage_collected_leaves_the_metrics(registry):
    export_metrics(SignalPipeline(max_buffer_size=3), registry, name="temporary")
    gc.collect()
    assert value(registry, "fluxgate_stream_buffer_size", "temporary") is None
    assert "fluxgate_stream_buffer_size" in generate_latest(registry).decode()  # HELP stays


def test_default_pipeline_on_the_default_registry():
    metrics = export_metrics()
    collector = REGISTRY._names_to_collectors["fluxgate_stream_queue_depth"]
    try:
        assert metrics.pipeline.max_buffer_size == 1024
        assert (
            REGISTRY.get_sample_value("fluxgate_stream_buffer_size", {"pipeline": "default"})
            == 1024.0
        )
        assert repr(metrics) == (
            f"<PipelineMetrics 'default' of {metrics.pipeline!r}, read at scrape time>"
        )
    finally:
        REGISTRY.unregister(collector)


def test_a_scrape_takes_no_lock_of_ours_and_needs_no_event_loop(registry):
    pipeline = SignalPipeline()
    export_metrics(pipeline, registry)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with APPLY_LOCK:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        result: list[bytes] = []
        scraper = threading.Thread(target=lambda: result.append(generate_latest(registry)))
        scraper.start()
        scraper.join(timeout=10)
        assert result, "the scrape waited for the apply lock"
    finally:
        release.set()
        holder.join()


def test_a_foreign_metric_under_one_of_our_names_is_refused_clearly(registry):
    Gauge("fluxgate_stream_queue_depth", "someone else's", registry=registry)
    with pytest.raises(
        ValueError,
        match=r"^registry already has a collector for 'fluxgate_stream_queue_depth' that is "
        r"not fluxgate-stream's$",
    ):
        export_metrics(SignalPipeline(), registry)
    other = CollectorRegistry()
    Gauge("fluxgate_stream_batches_total", "someone else's", registry=other)
    with pytest.raises(ValueError, match=r"^Duplicated timeseries in CollectorRegistry: "):
        export_metrics(SignalPipeline(), other)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"pipeline": "p"}, TypeError, "pipeline must be a SignalPipeline, got str"),
        ({"name": 3}, TypeError, "name must be a str, got int"),
        ({"name": ""}, ValueError, "name must be a non-empty str"),
    ],
)
def test_bad_arguments_are_refused(registry, kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        export_metrics(registry=registry, **kwargs)


async def test_run_has_nothing_to_do_in_one_process(anyio_backend, registry):
    metrics = export_metrics(SignalPipeline(), registry)
    assert not metrics.multiprocess
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(metrics.run)  # returns at once
    metrics.publish()  # a no-op here
    with pytest.raises(ValueError, match=r"^interval must be positive, got 0$"):
        await metrics.run(interval=0)
