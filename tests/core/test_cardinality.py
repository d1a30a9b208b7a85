"""An optional cap on distinct circuit names per registry, against label-cardinality explosions."""

from __future__ import annotations

import re
import threading

import pytest
from fluxgate.signal import Signal
from prometheus_client import REGISTRY, CollectorRegistry

from fluxgate_stream import CircuitLimitError, PrometheusListener, SignalPipeline, limit_circuits
from fluxgate_stream._apply import APPLY_LOCK
from fluxgate_stream._circuits import circuit_for

from ..support.metrics import samples, shown

OPEN = Signal("closed", "open", 0.0)


def refused(name: str, known: int) -> str:
    return re.escape(
        f"this registry already has {known} circuit names, its limit; refusing a new "
        f"circuit_name {name} (see limit_circuits())"
    )


def test_past_the_cap_a_new_name_is_refused_and_known_names_keep_working(registry):
    limit_circuits(3, registry)
    listeners = [PrometheusListener(f"tenant_{i}", registry) for i in range(3)]
    before = samples(registry)
    with pytest.raises(CircuitLimitError, match=f"^{refused(repr('tenant_3'), 3)}$"):
        PrometheusListener("tenant_3", registry)
    assert samples(registry) == before  # nothing written for it
    again = PrometheusListener("tenant_0", registry)  # a known name: fine
    again(OPEN)
    assert shown(registry, "tenant_0") == "open"
    listeners[1].close()  # close() does not free the name's slot
    with pytest.raises(CircuitLimitError):
        PrometheusListener("tenant_4", registry)
    assert issubclass(CircuitLimitError, ValueError)


def test_long_names_are_shortened_in_the_error(registry):
    limit_circuits(1, registry)
    PrometheusListener("first", registry)
    name = "u" * 200  # within the 256 bytes a name may have
    shortened = f"{'u' * 60!r}... (200 characters)"
    with pytest.raises(CircuitLimitError, match=f"^{refused(shortened, 1)}$"):
        PrometheusListener(name, registry)


def test_the_cap_can_be_raised_lowered_and_removed(registry):
    limit_circuits(1, registry)
    PrometheusListener("a", registry)
    limit_circuits(2, registry)
    PrometheusListener("b", registry)
    limit_circuits(1, registry)  # below what is in use: known names still work
    PrometheusListener("a", registry)(OPEN)
    with pytest.raises(CircuitLimitError, match=f"^{refused(repr('c'), 2)}$"):
        PrometheusListener("c", registry)
    limit_circuits(None, registry)
    PrometheusListener("c", registry)
    assert shown(registry, "a") == "open"


def test_each_registry_has_its_own_cap(registry):
    limit_circuits(1, registry)
    other = CollectorRegistry()
    PrometheusListener("one", registry)
    for i in range(10):
        PrometheusListener(f"free_{i}", other)
    with pytest.raises(CircuitLimitError):
        PrometheusListener("two", registry)


def test_the_default_registry_can_be_capped():
    from fluxgate_stream._circuits import _family  # noqa: PLC0415  # to count what other tests left

    with APPLY_LOCK:
        known = len(_family(REGISTRY).circuits)
    limit_circuits(known + 1)
    try:
        PrometheusListener("cardinality_default_first")
        with pytest.raises(CircuitLimitError):
            PrometheusListener("cardinality_default_second")
    finally:
        limit_circuits(None)
    listener = PrometheusListener("cardinality_default_second")
    listener.close()


def test_names_from_user_input_racing_from_threads_never_pass_the_cap(registry):
    limit_circuits(100, registry)
    pipeline = SignalPipeline()
    accepted: list[str] = []
    refusals = 0
    lock = threading.Lock()

    def requests(worker: int) -> None:
        nonlocal refusals
        for i in range(200):
            name = f"user_{worker}_{i}"
            try:
                PrometheusListener(name, registry, pipeline=pipeline)(OPEN)
            except CircuitLimitError:
                with lock:
                    refusals += 1
            else:
                with lock:
                    accepted.append(name)

    threads = [threading.Thread(target=requests, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(accepted) == 100
    assert refusals == 8 * 200 - 100
    names = {dict(labels)["circuit_name"] for _, labels in samples(registry)}
    assert names == set(accepted)


@pytest.mark.parametrize(
    ("limit", "error", "message"),
    [
        (0, ValueError, "max_circuits must be at least 1, got 0"),
        (-3, ValueError, "max_circuits must be at least 1, got -3"),
        (2.5, TypeError, "max_circuits must be an int or None, got float"),
        ("10", TypeError, "max_circuits must be an int or None, got str"),
        (True, TypeError, "max_circuits must be an int or None, got bool"),
    ],
)
def test_bad_caps_are_refused(registry, limit, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        limit_circuits(limit, registry)


def test_the_cap_is_checked_where_circuits_are_made(registry):
    limit_circuits(1, registry)
    circuit_for(registry, "only", None)
    with pytest.raises(CircuitLimitError):
        circuit_for(registry, "second", None)
