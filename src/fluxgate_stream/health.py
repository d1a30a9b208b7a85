"""Breaker health at scrape time: what a breaker's window holds, read only when Prometheus asks.

``watch(cb, "payment_api")`` registers a breaker (fluxgate's ``CircuitBreaker`` or
``AsyncCircuitBreaker``, ``fluxgate_stream.anyio_breaker.AnyioCircuitBreaker``, or anything whose
``info()`` returns a ``fluxgate.circuitbreaker.CircuitBreakerInfo``) under a ``circuit_name``.
Nothing is added to the breaker: no listener, no wrapper, no work per call. When the registry is
scraped, one collector calls ``info()`` on every watched breaker and exports these gauges:

* ``circuit_breaker_buffered_calls{circuit_name,kind}``: calls in the breaker's window,
  ``kind="successful"`` or ``"failed"`` (resilience4j's ``buffered_calls``).
* ``circuit_breaker_failure_rate_ratio{circuit_name}``: failed / calls in the window, 0..1
  (resilience4j's ``failure_rate``, which is in %); absent while the window is empty.
* ``circuit_breaker_slow_calls{circuit_name,threshold_seconds}``: calls in the window that took
  at least ``threshold_seconds`` (resilience4j's ``slow_calls``).
* ``circuit_breaker_slow_call_rate_ratio{circuit_name,threshold_seconds}``: slow calls / calls in
  the window, 0..1, per threshold (resilience4j's ``slow_call_rate``); absent while the window
  is empty.
* ``circuit_breaker_average_latency_seconds{circuit_name}``: total duration / calls in the
  window, what fluxgate's ``AvgLatency`` tripper compares; absent while the window is empty.
* ``circuit_breaker_consecutive_reopens{circuit_name}``: HALF_OPEN -> OPEN reopens since the
  circuit last closed (``reopens``, what ``Backoff`` retries grow with); back to 0 on every move
  to CLOSED, ``reset()`` included.
* ``circuit_breaker_last_transition_timestamp_seconds{circuit_name}``: Unix time the breaker
  entered its current state (its creation if it never moved). Seconds since: ``time() - ...``
  in PromQL.

Semantics, all fluxgate's own (``fluxgate.metric.Metric``):

* *The window* is the breaker's sliding window (``CountWindow``: the last N recorded calls;
  ``TimeWindow``: the last N seconds), **reset on every transition**: right after a circuit trips
  open its window is empty, and it stays empty while nothing is recorded (OPEN, FORCED_OPEN,
  DISABLED). So these gauges describe the current state's window, the one the tripper judges.
* *Empty window*: the three ratios and the average are left out (no sample), never reported as
  0, -1 or NaN (resilience4j#1616), so ``avg()``, ``max()`` and alerts on them are not skewed and
  Grafana shows a gap. ``circuit_breaker_buffered_calls`` is always present (0 and 0), which
  tells "no calls" from "not watched".
* *Failures* are calls the breaker's tracker counted. fluxgate records a failure with a duration
  of 0 s and never counts it as slow, so ``circuit_breaker_slow_calls`` are successful calls, and
  the average latency counts failures as 0 s, exactly as the ``AvgLatency`` tripper does.
  Rejected calls (``CallNotPermittedError``) and exceptions the tracker ignores are not recorded
  by fluxgate, so resilience4j's ``not_permitted`` and ``ignored`` kinds have no equivalent.
* *Thresholds*: one ``threshold_seconds`` label value per ``SlowRate`` threshold of the breaker's
  tripper (``slow_thresholds=`` overrides them), formatted like Prometheus' ``le`` (``"0.5"``,
  ``"60.0"``); a threshold that has no slow call shows 0 (a measured 0, not a placeholder).
* *State* is not exported here: ``PrometheusListener`` exports ``circuit_breaker_state`` from the
  transitions themselves. There are no counters: every value above can go down.
* ``TimeWindow`` caveat (fluxgate 0.9.4): a bucket is only cleared when a call lands in the
  same slot again, so after a quiet spell the window still holds calls older than its size, and
  so do these gauges, exactly as the tripper sees them.

Lifecycle: a watch lasts until its handle's ``close()`` (or the end of its ``with`` block), or
until the breaker is garbage-collected, whichever comes first; either way its series are gone
from the next scrape. The collector holds breakers by weak reference only: watching never keeps
a breaker alive, and dropping the handle does not end the watch.

Concurrency: ``watch()`` and ``close()`` work from any thread. A scrape copies the list of
watches under a lock and calls ``info()`` outside it, so it never blocks a breaker, and
watching or closing never waits for a scrape. ``info()`` reads a few attributes without a lock
(fluxgate's breakers take none either): a scrape racing a transition may see the new state's
timestamp with the old window, never a torn number.

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): prometheus_client's ``MultiProcessCollector``
merges the workers' metric files and never calls custom collectors; registered on the
exposition registry instead, this collector would answer for whichever worker served the
scrape. ``watch()`` therefore raises ``RuntimeError`` there. To export one worker's health
anyway, register a ``HealthCollector`` on a registry that this worker alone serves (its own
port) and call its ``watch()``.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Protocol, cast

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from fluxgate_stream import _catalogue as catalogue
from fluxgate_stream._checks import check_breaker, check_name, check_registry, check_thresholds
from fluxgate_stream._compat import format_float, multiprocess, registered, same_class
from fluxgate_stream._handles import Closing

if TYPE_CHECKING:
    from fluxgate.circuitbreaker import CircuitBreakerInfo

__all__ = ["HealthCollector", "HealthWatch", "SupportsInfo", "watch"]

_log = logging.getLogger("fluxgate_stream.health")

#: A threshold's label value, formatted as prometheus_client formats ``le``.
_label: Callable[[float], str] = format_float

BUFFERED_CALLS: Final = catalogue.BUFFERED_CALLS.name
FAILURE_RATE: Final = catalogue.FAILURE_RATE.name
SLOW_CALLS: Final = catalogue.SLOW_CALLS.name
SLOW_CALL_RATE: Final = catalogue.SLOW_CALL_RATE.name
AVERAGE_LATENCY: Final = catalogue.AVERAGE_LATENCY.name
REOPENS: Final = catalogue.REOPENS.name
LAST_TRANSITION: Final = catalogue.LAST_TRANSITION.name

#: (name, help, labels) of every family, in exposition order.
FAMILIES: Final = tuple((spec.name, spec.help, spec.labels) for spec in catalogue.HEALTH)

MULTIPROCESS_MESSAGE: Final = (
    "watch() does not work in prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR is "
    "set): breaker health is read from this process's breakers at scrape time, while a "
    "multiprocess scrape merges the workers' metric files and never asks this process, so the "
    "series would be missing or come from whichever worker served the scrape. To export one "
    "worker's health, register a HealthCollector on a registry only that worker serves and call "
    "its watch()"
)


class SupportsInfo(Protocol):
    """What ``watch()`` accepts: fluxgate's breakers, ``AnyioCircuitBreaker``, and look-alikes."""

    def info(self) -> CircuitBreakerInfo:
        """Return the breaker's state, last transition time, reopen count and window metrics."""
        ...


class HealthWatch(Closing):
    """One watched breaker: its ``circuit_name`` on one collector. Returned by ``watch()``.

    Use it as a context manager, or call ``close()``, to stop exporting. The watch also ends by
    itself when the breaker is garbage-collected. The handle does not keep the breaker alive,
    and dropping the handle does not end the watch.

    Attributes:
        name: the ``circuit_name`` label value.
        slow_thresholds: the ``threshold_seconds`` exported for this breaker, sorted.
        collector: the collector that exports it.
    """

    __slots__ = ("_ref", "collector", "name", "slow_thresholds")

    def __init__(
        self,
        collector: HealthCollector,
        breaker: SupportsInfo,
        name: str,
        slow_thresholds: tuple[float, ...],
    ) -> None:
        self.collector: HealthCollector = collector
        self.name: str = name
        self.slow_thresholds: tuple[float, ...] = slow_thresholds
        self._ref = weakref.ref(breaker)

    def __repr__(self) -> str:
        status = "active" if self.active else "closed"
        return f"<HealthWatch {self.name!r} {status}>"

    @property
    def breaker(self) -> SupportsInfo | None:
        """The watched breaker, or ``None`` once it has been garbage-collected."""
        return self._ref()

    @property
    def active(self) -> bool:
        """Whether the breaker is still exported: not closed, not garbage-collected."""
        return self.collector.watching(self.name) is self

    def close(self) -> None:
        """Stop exporting this breaker; its series are gone from the next scrape. Idempotent.

        Closing never affects a later watch of the same name.
        """
        self.collector.unwatch(self)


class _Entry:
    """What the collector keeps per watch: the handle, the breaker's weak reference, and labels.

    Attributes:
        handle: the watch's public handle.
        ref: weak reference to the breaker; its callback queues this entry for pruning.
        thresholds: the configured thresholds, sorted.
        labels: each threshold's ``threshold_seconds`` label value.
        failing: whether the last ``info()`` raised (its failure was logged).
    """

    __slots__ = ("failing", "handle", "labels", "ref", "thresholds")

    def __init__(self, handle: HealthWatch, breaker: SupportsInfo, dead: deque[_Entry]) -> None:
        self.handle = handle
        self.thresholds = handle.slow_thresholds
        self.labels = {t: _label(t) for t in self.thresholds}
        self.failing = False

        def gone(_: object, entry: _Entry = self) -> None:
            # Runs inside the garbage collector, possibly while this thread holds the
            # collector's lock: only a deque append, which takes no lock. Pruned later.
            dead.append(entry)

        self.ref: weakref.ref[SupportsInfo] = weakref.ref(breaker, gone)


class HealthCollector:
    """A prometheus_client collector exporting the health of watched breakers at scrape time.

    ``watch()`` (the module function) creates and registers one per registry for you; create one
    yourself only to choose where it is registered, as in multiprocess mode (see the module
    docs). Only one can be registered on a registry: the second would duplicate its names.

    Example:
        >>> from fluxgate import CircuitBreaker
        >>> from prometheus_client import CollectorRegistry
        >>> registry = CollectorRegistry()
        >>> health = HealthCollector()
        >>> registry.register(health)
        >>> cb = CircuitBreaker()
        >>> handle = health.watch(cb, "payment_api")
        >>> registry.get_sample_value(
        ...     "circuit_breaker_buffered_calls", {"circuit_name": "payment_api", "kind": "failed"}
        ... )
        0.0
        >>> handle.close()
        >>> health.names()
        []
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        # Entries whose breaker was garbage-collected, appended by weakref callbacks.
        self._dead: deque[_Entry] = deque()

    def __repr__(self) -> str:
        return f"<HealthCollector watching {len(self.names())} breakers>"

    def watch(
        self,
        breaker: SupportsInfo,
        name: str,
        *,
        slow_thresholds: Iterable[float] | None = None,
    ) -> HealthWatch:
        """Export ``breaker``'s health under ``circuit_name=name`` from the next scrape on.

        Unlike the module's ``watch()``, works in multiprocess mode: you chose the registry.

        Args:
            breaker: a fluxgate breaker, or any object whose ``info()`` returns a
                ``CircuitBreakerInfo``. Held by weak reference.
            name: the ``circuit_name`` label value, unique among this collector's watches.
            slow_thresholds: the slow-call thresholds, in seconds, to export rates for;
                ``None`` uses the breaker's ``SlowRate`` thresholds.

        Returns:
            The watch's handle.

        Raises:
            TypeError: ``name`` is not a ``str``; ``breaker`` has no ``info()`` or it does not
                return a ``CircuitBreakerInfo``; ``slow_thresholds`` is not an iterable of
                numbers.
            ValueError: ``name`` is empty or already watched here (by a breaker that is alive
                and not closed); a threshold is not positive and finite.
        """
        name = check_name(name)
        check_breaker(breaker)
        return self.add(breaker, name, check_thresholds(breaker, slow_thresholds))

    def add(self, breaker: SupportsInfo, name: str, thresholds: tuple[float, ...]) -> HealthWatch:
        """``watch()`` once its arguments are checked (the module's ``watch()`` checks them first).

        ``name`` and ``thresholds`` are checked (again), so that nothing added can break a
        scrape; the thresholds are exported sorted and without duplicates.

        Raises:
            TypeError: ``name`` is not a ``str``; ``thresholds`` is not an iterable of numbers.
            ValueError: ``name`` is empty, not UTF-8 text, too long, or already watched here; a
                threshold is not positive and finite.
        """
        name = check_name(name)
        thresholds = check_thresholds(breaker, thresholds)
        handle = HealthWatch(self, breaker, name, thresholds)
        entry = _Entry(handle, breaker, self._dead)
        with self._lock:
            self._prune()
            current = self._entries.get(name)
            if current is not None and current.ref() is not None:
                raise ValueError(
                    f"circuit_name {name!r} is already watched on this registry; "
                    "close() its handle first"
                )
            self._entries[name] = entry
        return handle

    def unwatch(self, handle: HealthWatch) -> None:
        """End ``handle``'s watch, if it is still this collector's watch of its name."""
        with self._lock:
            entry = self._entries.get(handle.name)
            if entry is not None and entry.handle is handle:
                del self._entries[handle.name]
            self._prune()

    def watching(self, name: str) -> HealthWatch | None:
        """Return the handle of the live watch of ``name``, or ``None``."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or entry.ref() is None:
            return None
        return entry.handle

    def names(self) -> list[str]:
        """The ``circuit_name`` of every live watch, sorted."""
        with self._lock:
            self._prune()
            entries = list(self._entries.values())
        return sorted(e.handle.name for e in entries if e.ref() is not None)

    def _prune(self) -> None:
        """Forget the entries whose breaker was garbage-collected. Caller holds ``_lock``."""
        dead = self._dead
        while dead:
            entry = dead.popleft()
            name = entry.handle.name
            if self._entries.get(name) is entry:
                del self._entries[name]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, text, labels=labels) for name, text, labels in FAMILIES]

    def describe(self) -> list[Metric]:
        """The metric families without samples: lets a registry check our names on register."""
        return list(self._families())

    def collect(self) -> list[Metric]:
        """Read every watched breaker's ``info()`` and return the families (one scrape)."""
        with self._lock:
            self._prune()
            entries = list(self._entries.values())
        families = self._families()
        buffered, failure, slow, slow_rate, latency, reopens, changed = families
        for entry in entries:
            breaker = entry.ref()
            if breaker is None:
                continue
            name = entry.handle.name
            try:
                info = breaker.info()
                metric = info.metrics
                total = int(metric.total_count)
                failed = int(metric.failure_count)
                duration = float(metric.total_duration)
                slow_counts = {float(t): float(n) for t, n in metric.slow_counts.items()}
                values = (float(info.reopens), float(info.changed_at))
            except Exception:  # noqa: BLE001 - one broken breaker must not fail the whole scrape
                if not entry.failing:
                    entry.failing = True
                    _log.warning(
                        "info() of circuit %r failed; its health is left out of scrapes until "
                        "it answers again",
                        name,
                        exc_info=True,
                    )
                continue
            if entry.failing:
                entry.failing = False
                _log.warning("info() of circuit %r answers again", name)
            buffered.add_metric((name, "successful"), float(total - failed))
            buffered.add_metric((name, "failed"), float(failed))
            labels = entry.labels
            thresholds: Iterable[float] = entry.thresholds
            if not slow_counts.keys() <= labels.keys():
                thresholds = sorted({*thresholds, *slow_counts})  # counted, yet not configured
            for threshold in thresholds:
                label = labels.get(threshold) or _label(threshold)
                count = slow_counts.get(threshold, 0.0)
                slow.add_metric((name, label), count)
                if total:
                    slow_rate.add_metric((name, label), count / total)
            if total:  # fluxgate's Metric.failure_rate and avg_duration, None when empty
                failure.add_metric((name,), failed / total)
                latency.add_metric((name,), duration / total)
            reopens.add_metric((name,), values[0])
            changed.add_metric((name,), values[1])
        return list(families)


_registries_lock = threading.Lock()


def _multiprocess_mode() -> bool:
    """Whether prometheus_client runs, or will be scraped, in multiprocess mode."""
    return multiprocess() or bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def collector_for(registry: CollectorRegistry | None = None) -> HealthCollector:
    """Return the ``HealthCollector`` registered on ``registry``, registering one if there is none.

    Args:
        registry: ``None`` means ``prometheus_client.REGISTRY``.

    Raises:
        ValueError: another collector already holds one of the health metrics' names there.
    """
    registry = check_registry(registry)
    target = REGISTRY if registry is None else registry
    with _registries_lock:
        existing = registered(target, FAILURE_RATE)
        if existing is None:
            collector = HealthCollector()
            target.register(collector)
            return collector
        # A copy of this module loaded by importlib.reload reuses the collector an older one made.
        if not same_class(existing, HealthCollector):
            raise ValueError(
                f"registry already has a collector for {FAILURE_RATE!r} that is not "
                "fluxgate-stream's HealthCollector"
            )
        return cast("HealthCollector", existing)


def watch(
    breaker: SupportsInfo,
    name: str,
    registry: CollectorRegistry | None = None,
    *,
    slow_thresholds: Iterable[float] | None = None,
) -> HealthWatch:
    """Export ``breaker``'s health (see the module docs) under ``circuit_name=name``.

    Costs nothing per call: the breaker is only read, through ``info()``, when ``registry`` is
    scraped. The first watch on a registry registers its ``HealthCollector``.

    Args:
        breaker: ``CircuitBreaker``, ``AsyncCircuitBreaker``, ``AnyioCircuitBreaker``, or any
            object whose ``info()`` returns a ``fluxgate.circuitbreaker.CircuitBreakerInfo``.
            Held by weak reference: when it is garbage-collected, its series go.
        name: the ``circuit_name`` label value: a non-empty ``str``, unique per registry among
            live watches. Use the name of the breaker's ``PrometheusListener``, so that health
            and state join on it.
        registry: where to export; ``None`` means ``prometheus_client.REGISTRY``.
        slow_thresholds: the slow-call thresholds, in seconds, to export; ``None`` (the
            default) uses those of the breaker's ``SlowRate`` trippers.

    Returns:
        The handle: ``close()`` it, or use it as a context manager, to stop exporting.

    Raises:
        TypeError: ``name`` is not a ``str``; ``breaker`` has no ``info()`` or it does not
            return a ``CircuitBreakerInfo``; ``slow_thresholds`` is not an iterable of numbers.
        ValueError: ``name`` is empty or already watched on this registry; a threshold is not
            positive and finite; another collector holds one of the metric names there.
        RuntimeError: prometheus_client runs in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
            is set), where scrapes never reach this collector.

    Example:
        >>> from fluxgate import CircuitBreaker
        >>> from fluxgate.trippers import FailureRate, MinRequests
        >>> from prometheus_client import CollectorRegistry
        >>> registry = CollectorRegistry()
        >>> cb = CircuitBreaker(tripper=MinRequests(10) & FailureRate(0.5))
        >>> with watch(cb, "payment_api", registry):
        ...     _ = cb.call(lambda: "ok")
        ...     registry.get_sample_value(
        ...         "circuit_breaker_failure_rate_ratio", {"circuit_name": "payment_api"}
        ...     )
        0.0
        >>> registry.get_sample_value(
        ...     "circuit_breaker_failure_rate_ratio", {"circuit_name": "payment_api"}
        ... ) is None
        True
    """
    name = check_name(name)
    registry = check_registry(registry)
    check_breaker(breaker)
    thresholds = check_thresholds(breaker, slow_thresholds)
    if _multiprocess_mode():
        raise RuntimeError(MULTIPROCESS_MESSAGE)
    return collector_for(registry).add(breaker, name, thresholds)
