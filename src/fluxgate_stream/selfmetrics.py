"""Self-metrics: the pipeline's own health, exported next to the circuits' metrics.

``export_metrics(pipeline, registry)`` exports what ``SignalPipeline.statistics()`` counts,
under the ``fluxgate_stream_`` prefix with a ``pipeline`` label:

================================================  =======  ====================================
metric                                            type     meaning
================================================  =======  ====================================
``fluxgate_stream_signals_total{path}``           counter  signals and ``close()`` calls per
                                                           path: ``stream`` (loop thread),
                                                           ``bridge`` (other threads),
                                                           ``overflow`` (full buffer: the
                                                           overflow queue), ``direct`` (no
                                                           consumer: applied in the caller)
``fluxgate_stream_batches_total``                 counter  tallies applied
``fluxgate_stream_apply_errors_total``            counter  circuit writes that raised
``fluxgate_stream_wakeups_total``                 counter  wake-ups of a sleeping consumer: by a
                                                           signal from another thread, or by
                                                           a ``flush()``
``fluxgate_stream_queue_depth``                   gauge    items in the stream and the bridge
``fluxgate_stream_buffer_size``                   gauge    ``max_buffer_size``
``fluxgate_stream_consumer_running``              gauge    1 while a consumer runs, else 0
================================================  =======  ====================================

In one process, a collector reads ``statistics()`` when the registry is scraped: nothing is
added to the producers' or the consumer's path. Nothing is exported unless you ask, so that a
registry holds exactly upstream's two metrics by default.

In prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), custom collectors are
never read (the scraper merges the workers' files), so the same metrics are file-backed instead
and hold what ``PipelineMetrics.publish()`` last wrote: run ``PipelineMetrics.run`` in each worker
to publish every few seconds. The counters are summed over every worker that ever ran; the gauges
are summed over live workers (``livesum``): total queue depth, total buffer size, number of
running consumers. Each process publishes only what it counted itself: after ``os.fork()``
(``gunicorn --preload``), the child's first publish counts from the pipeline's statistics at
the fork, which the parent inherited into the child and publishes (or not) itself.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Final, cast

import anyio
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from fluxgate_stream import _catalogue as catalogue
from fluxgate_stream._checks import check_bool, check_name, check_registry, check_seconds
from fluxgate_stream._compat import (
    at_fork,
    kept,
    multiprocess,
    registered,
    same_class,
    value_class,
)
from fluxgate_stream._queue import states
from fluxgate_stream.pipeline import PipelineStatistics, SignalPipeline, resolve_pipeline

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from anyio.abc import TaskStatus

    from fluxgate_stream._catalogue import MetricSpec

__all__ = ["PipelineMetrics", "export_metrics"]


def _paths(stats: PipelineStatistics) -> tuple[tuple[str, int], ...]:
    """``fluxgate_stream_signals_total``'s value per ``path`` label value (``catalogue.PATHS``)."""
    counts = (stats.stream, stats.bridge, stats.overflow, stats.direct)
    return tuple(zip(catalogue.PATHS, counts, strict=True))


#: Every self-metric but the per-path counter, and how a snapshot gives its value.
_READINGS: Final[tuple[tuple[MetricSpec, Callable[[PipelineStatistics], int]], ...]] = (
    (catalogue.BATCHES, lambda stats: stats.batches),
    (catalogue.APPLY_ERRORS, lambda stats: stats.apply_errors),
    (catalogue.WAKEUPS, lambda stats: stats.wakeups),
    (catalogue.QUEUE_DEPTH, lambda stats: stats.queued),
    (catalogue.BUFFER_SIZE, lambda stats: stats.max_buffer_size),
    (catalogue.CONSUMER_RUNNING, lambda stats: int(stats.running)),
)

_lock = threading.Lock()  # guards exports and multiprocess publishing


class _Collector:
    """Reads the exported pipelines' ``statistics()`` at scrape time. One per registry."""

    def __init__(self) -> None:
        self.pipelines: dict[str, weakref.ref[SignalPipeline]] = {}

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        snapshots: dict[str, PipelineStatistics] = {}
        for name, ref in list(self.pipelines.items()):
            pipeline = ref()
            if pipeline is not None:
                snapshots[name] = pipeline.statistics()
        return self._families(snapshots)

    @staticmethod
    def _families(snapshots: dict[str, PipelineStatistics]) -> Iterator[Metric]:
        spec = catalogue.SIGNALS
        signals = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
        for name, stats in snapshots.items():
            for path, value in _paths(stats):
                signals.add_metric((name, path), float(value))
        yield signals
        for spec, read in _READINGS:
            kind = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = kind(spec.name, spec.help, labels=spec.labels)
            for name, stats in snapshots.items():
                family.add_metric((name,), float(read(stats)))
            yield family


def _collector_for(registry: CollectorRegistry) -> _Collector:
    """Return the registry's collector, registering one first if it has none. Holds ``_lock``."""
    existing = registered(registry, catalogue.QUEUE_DEPTH.name)
    if existing is None:
        collector = _Collector()
        registry.register(collector)
        return collector
    # A copy of this module loaded by importlib.reload reuses the collector an older one made.
    if not same_class(existing, _Collector):
        raise ValueError(  # a registry conflict, as prometheus_client's own ValueError
            f"registry already has a collector for {catalogue.QUEUE_DEPTH.name!r} "
            "that is not fluxgate-stream's"
        )
    return cast("_Collector", existing)


class _FileMetrics:
    """Multiprocess mode: the self-metrics as file-backed metrics, and what was published."""

    def __init__(self) -> None:
        spec = catalogue.SIGNALS
        self.signals = Counter(spec.name, spec.help, spec.labels, registry=None)
        self.metrics: dict[MetricSpec, Counter | Gauge] = {
            spec: Counter(spec.name, spec.help, spec.labels, registry=None)
            if spec.kind == "counter"
            else Gauge(
                spec.name, spec.help, spec.labels, registry=None, multiprocess_mode="livesum"
            )
            for spec, _ in _READINGS
        }
        # Per pipeline name: the pipeline last published under it, and its statistics then.
        self.published: dict[str, tuple[weakref.ref[SignalPipeline], PipelineStatistics]] = {}

    def publish(self, name: str, pipeline: SignalPipeline) -> None:
        """Write ``pipeline``'s statistics under ``name``. Caller holds ``_lock``."""
        stats = pipeline.statistics()
        last: PipelineStatistics | None = None
        previous = self.published.get(name)
        if previous is not None and previous[0]() is pipeline:
            last = previous[1]  # else another pipeline now has this name: its counts start at 0
        else:
            last = _AT_FORK.get(pipeline)  # in a forked child: from its statistics at the fork
        # Every series exists from the first publish on, at 0 if need be.
        before = dict(_paths(last)) if last is not None else {}
        for path, value in _paths(stats):
            child = self.signals.labels(name, path)
            if value > before.get(path, 0):
                child.inc(value - before.get(path, 0))
        for spec, read in _READINGS:
            metric = self.metrics[spec]
            value = read(stats)
            if isinstance(metric, Gauge):
                metric.labels(name).set(value)
                continue
            child = metric.labels(name)
            was = read(last) if last is not None else 0
            if value > was:
                child.inc(value - was)
        self.published[name] = (weakref.ref(pipeline), stats)


# One set per process (keyed by prometheus_client's value class, which multiprocess mode fixes),
# kept across importlib.reload: two counter objects for one file-backed value would overwrite
# each other's increments.
_FILE_METRICS: weakref.WeakKeyDictionary[type, _FileMetrics] = kept(
    "selfmetrics.file_metrics", weakref.WeakKeyDictionary[type, _FileMetrics]
)


#: In a forked child, every pipeline's statistics at the fork: what the parent counted, and
#: publishes itself. Written by the fork hook (the child has one thread then); read under _lock.
_AT_FORK: weakref.WeakKeyDictionary[SignalPipeline, PipelineStatistics] = kept(
    "selfmetrics.at_fork", weakref.WeakKeyDictionary[SignalPipeline, PipelineStatistics]
)


def _after_fork_in_child() -> None:  # pragma: no cover  # runs in forked children (their tests)
    """A forked child publishes only what it counts itself (see the module docs)."""
    global _lock  # noqa: PLW0603  # a thread the child has not may have held it
    _lock = threading.Lock()
    _AT_FORK.clear()
    for owner, _ in states():
        if same_class(owner, SignalPipeline):
            pipeline = cast("SignalPipeline", owner)
            _AT_FORK[pipeline] = pipeline.statistics()
    for metrics in _FILE_METRICS.values():
        metrics.published.clear()  # the parent's baselines: superseded by the fork's


# Registered once (a reload finds it kept), after the pipelines' hook; runs the current code.
at_fork("selfmetrics.published", after_in_child=_after_fork_in_child)


def _file_metrics() -> _FileMetrics:
    """Return this process's file-backed self-metrics, creating them once. Holds ``_lock``."""
    values = value_class()
    metrics = _FILE_METRICS.get(values)
    if metrics is None:
        metrics = _FILE_METRICS[values] = _FileMetrics()
    return metrics


class PipelineMetrics:
    """A pipeline's self-metrics, exported under a ``pipeline`` label; see ``export_metrics``.

    Attributes:
        pipeline: the pipeline whose ``statistics()`` are exported.
        name: its ``pipeline`` label value.
        multiprocess: whether prometheus_client runs in multiprocess mode, where the metrics
            hold what ``publish()`` last wrote instead of being read at scrape time.
    """

    __slots__ = ("multiprocess", "name", "pipeline")

    def __init__(self, pipeline: SignalPipeline, name: str, *, multiprocess: bool) -> None:
        """Usually made by ``export_metrics``; the arguments are checked as there.

        Raises:
            TypeError: ``pipeline`` is not a ``SignalPipeline``, ``name`` not a ``str``, or
                ``multiprocess`` not a ``bool``.
            ValueError: ``name`` breaks the name rule (see ``export_metrics``).
        """
        self.pipeline: SignalPipeline = resolve_pipeline(pipeline)  # None: the default one
        self.name: str = check_name(name)
        self.multiprocess: bool = check_bool(multiprocess, "multiprocess")

    def __repr__(self) -> str:
        mode = "multiprocess" if self.multiprocess else "read at scrape time"
        return f"<PipelineMetrics {self.name!r} of {self.pipeline!r}, {mode}>"

    def publish(self) -> None:
        """Multiprocess mode: write the pipeline's current stats to this process's files.

        Counters grow by what the pipeline counted since the last ``publish()`` of this name;
        gauges take the current values. Does nothing in single-process mode, where the metrics
        are read when scraped. Any thread.
        """
        if self.multiprocess:
            with _lock:
                _file_metrics().publish(self.name, self.pipeline)

    async def run(
        self,
        *,
        interval: float = 5.0,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Multiprocess mode: ``publish()`` now, then every ``interval`` seconds until cancelled.

        Start it next to the consumer, in each worker: ``await tg.start(metrics.run)``. It
        publishes once more when cancelled, so a worker that shuts down cleanly leaves its final
        counts. In single-process mode it returns at once: there is nothing to publish.

        Raises:
            ValueError: ``interval`` is not positive.
        """
        check_seconds(interval, "interval", zero=False)
        if not self.multiprocess:
            task_status.started()
            return
        self.publish()
        task_status.started()
        try:
            while True:
                await anyio.sleep(interval)
                self.publish()
        finally:
            self.publish()


def export_metrics(
    pipeline: SignalPipeline | None = None,
    registry: CollectorRegistry | None = None,
    *,
    name: str = "default",
) -> PipelineMetrics:
    """Export ``pipeline``'s self-metrics (see the module docs) with ``pipeline=name``.

    Use the registry your listeners use. Exporting is idempotent, and the latest pipeline
    exported under a name replaces the previous one on that registry (so a second app instance
    in the same process, or a reloaded module, takes over without a duplicate-registration
    error). A pipeline that is garbage-collected disappears from the metrics. In multiprocess
    mode ``registry`` is not used: see ``PipelineMetrics.run``.

    Args:
        pipeline: the pipeline to export; ``None`` means ``default_pipeline()``.
        registry: where to export; ``None`` means ``prometheus_client.REGISTRY``.
        name: the ``pipeline`` label value, to tell several pipelines apart. A non-empty ``str``.

    Returns:
        The export, whose ``run()`` and ``publish()`` matter in multiprocess mode.

    Raises:
        TypeError: ``pipeline`` is not a ``SignalPipeline`` or ``name`` is not a ``str``.
        ValueError: ``name`` is empty, or the registry already holds another collector under one
            of the self-metrics' names.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from fluxgate_stream import SignalPipeline
        >>> registry, pipeline = CollectorRegistry(), SignalPipeline(max_buffer_size=64)
        >>> _ = export_metrics(pipeline, registry)
        >>> registry.get_sample_value("fluxgate_stream_buffer_size", {"pipeline": "default"})
        64.0
    """
    target = resolve_pipeline(pipeline)
    name = check_name(name)
    registry = check_registry(registry)
    mode = multiprocess()
    if not mode:
        with _lock:
            collector = _collector_for(REGISTRY if registry is None else registry)
            collector.pipelines[name] = weakref.ref(target)
    return PipelineMetrics(target, name, multiprocess=mode)
