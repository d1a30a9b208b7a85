"""Drop-in contract: upstream's metrics, labels, values, registries, and call-site checks."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fluxgate.listeners.prometheus import PrometheusListener as UpstreamListener
from fluxgate.signal import Signal
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest

from fluxgate_stream import ALL_STATES, PrometheusListener, SignalPipeline, limit_circuits
from fluxgate_stream._catalogue import OWN_TRANSITIONS

from ..support.metrics import count, gauge, samples, shown
from ..support.processes import CHILDREN, run_python

TRANSITIONS = [
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("closed", "forced_open"),
    ("forced_open", "disabled"),
    ("disabled", "metrics_only"),
    ("metrics_only", "closed"),
]


def signals() -> list[Signal]:
    return [Signal(old, new, float(i)) for i, (old, new) in enumerate(TRANSITIONS)]


def test_fluxgate_has_six_states_in_order():
    assert ALL_STATES == ("closed", "open", "half_open", "metrics_only", "disabled", "forced_open")


def zeros(
    name: str, skip: set[tuple[str, str]]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``samples()`` of circuit ``name``'s ``OWN_TRANSITIONS`` counters at 0, but ``skip``."""
    return {
        (
            "circuit_breaker_state_transition_total",
            (("circuit_name", name), ("new_state", new), ("old_state", old)),
        ): 0.0
        for old, new in OWN_TRANSITIONS
        if (old, new) not in skip
    }


def test_same_series_names_help_and_values_as_upstream(registry):
    theirs = CollectorRegistry()
    upstream = UpstreamListener("payment_api", registry=theirs)
    ours = PrometheusListener("payment_api", registry, initial_state=None)
    for signal in signals():
        upstream(signal)
        ours(signal)
    assert samples(registry) == samples(theirs)
    assert len(samples(registry)) == 6 + 8  # six state series, eight distinct transitions
    ours_text = [line for line in generate_latest(registry).splitlines() if b"_created" not in line]
    theirs_text = [line for line in generate_latest(theirs).splitlines() if b"_created" not in line]
    assert ours_text == theirs_text
    assert b"# HELP circuit_breaker_state Current state of the circuit breaker" in ours_text
    assert (
        b"# HELP circuit_breaker_state_transition_total "
        b"Count of state transitions for circuit breakers" in ours_text
    )


def comments(registry: CollectorRegistry) -> list[bytes]:
    """The HELP and TYPE lines of the state and transition metrics."""
    text = generate_latest(registry).splitlines()
    return [line for line in text if line.startswith(b"#") and b"_created" not in line]


@pytest.mark.parametrize(
    "moves",
    [TRANSITIONS, [("closed", "forced_open"), ("forced_open", "closed")], []],
    ids=["every-own-transition", "commands-only", "no-transition"],
)
def test_by_default_upstreams_series_plus_own_transitions_at_zero_and_nothing_else(registry, moves):
    theirs = CollectorRegistry()
    upstream = UpstreamListener("payment_api", registry=theirs)
    ours = PrometheusListener("payment_api", registry)  # initial_state="closed"
    upstream(Signal("closed", "closed", 0.0))  # upstream shows a state only after a signal
    upstream.close()
    for old, new in moves:
        upstream(Signal(old, new, 0.0))
        ours(Signal(old, new, 0.0))
    expected = samples(theirs)
    if not moves:  # upstream has no series yet; ours shows its initial state
        expected = {
            ("circuit_breaker_state", (("circuit_name", "payment_api"), ("state", s))): float(
                s == "closed"
            )
            for s in ALL_STATES
        }
    added = zeros("payment_api", skip=set(moves))
    assert samples(registry) == {**expected, **added}
    assert not expected.keys() & added.keys()
    assert len(added) == (0 if moves is TRANSITIONS else 4)
    assert comments(registry) == comments(theirs)


def test_gauge_is_one_for_the_current_state_and_zero_for_the_other_five(registry):
    listener = PrometheusListener("api", registry)
    listener(Signal("closed", "half_open", 0.0))
    assert gauge(registry, "api") == {
        "closed": 0.0,
        "open": 0.0,
        "half_open": 1.0,
        "metrics_only": 0.0,
        "disabled": 0.0,
        "forced_open": 0.0,
    }
    assert count(registry, "api", "closed", "half_open") == 1.0


def test_a_circuit_shows_closed_from_the_moment_its_listener_exists(registry):
    PrometheusListener("never_tripped", registry)
    assert shown(registry, "never_tripped") == "closed"


@pytest.mark.parametrize(
    "options",
    [{}, {"time_in_state": True}, {"initial_state": "disabled"}],
    ids=["default", "timed", "disabled"],
)
def test_own_transitions_are_counted_from_zero_at_creation(registry, options):
    PrometheusListener("fresh", registry, **options)
    for old, new in itertools.product(ALL_STATES, repeat=2):
        expected = 0.0 if (old, new) in OWN_TRANSITIONS else None
        assert count(registry, "fresh", old, new) == expected, (old, new)
    assert set(OWN_TRANSITIONS) == {
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("half_open", "closed"),
    }


def test_own_transition_zeros_keep_counts_and_come_back_after_close(registry):
    listener = PrometheusListener("tenant", registry)
    listener(Signal("closed", "open", 0.0))
    PrometheusListener("tenant", registry)  # a second listener resets no count
    assert count(registry, "tenant", "closed", "open") == 1.0
    assert count(registry, "tenant", "open", "half_open") == 0.0
    listener.close()
    assert samples(registry, "tenant") == {}
    PrometheusListener("tenant", registry)  # closed, no series: none come back without a signal
    assert samples(registry, "tenant") == {}
    listener(Signal("closed", "forced_open", 1.0))
    assert shown(registry, "tenant") == "forced_open"
    assert [count(registry, "tenant", old, new) for old, new in OWN_TRANSITIONS] == [0.0] * 4


def test_initial_state_none_creates_no_zeros_until_a_listener_with_one(registry):
    quiet = PrometheusListener("quiet", registry, initial_state=None)
    quiet(Signal("closed", "forced_open", 0.0))
    assert count(registry, "quiet", "closed", "open") is None
    PrometheusListener("quiet", registry)  # the circuit moved: its gauge stays, zeros appear
    assert shown(registry, "quiet") == "forced_open"
    assert [count(registry, "quiet", old, new) for old, new in OWN_TRANSITIONS] == [0.0] * 4


def test_a_name_past_the_cap_gets_no_zeros(registry):
    limit_circuits(1, registry)
    PrometheusListener("first", registry)
    with pytest.raises(ValueError, match="limit"):
        PrometheusListener("second", registry)
    assert samples(registry, "second") == {}
    assert len(samples(registry)) == 6 + 4


def test_initial_state_none_keeps_upstreams_empty_start(registry):
    PrometheusListener("quiet", registry, initial_state=None)
    assert samples(registry, "quiet") == {}


def test_initial_state_may_name_another_state(registry):
    PrometheusListener("off", registry, initial_state="disabled")
    assert shown(registry, "off") == "disabled"


def test_a_second_listener_does_not_reset_a_circuit_that_moved(registry):
    PrometheusListener("shared", registry)(Signal("closed", "open", 0.0))
    PrometheusListener("shared", registry)
    assert shown(registry, "shared") == "open"


def test_registry_isolates_from_the_default_registry(registry):
    listener = PrometheusListener("isolated_circuit", registry)
    listener(Signal("closed", "open", 0.0))
    assert count(registry, "isolated_circuit", "closed", "open") == 1.0
    assert count(REGISTRY, "isolated_circuit", "closed", "open") is None
    assert gauge(REGISTRY, "isolated_circuit")["open"] is None


def test_many_listeners_share_one_custom_registry_where_upstream_raises(registry):
    UpstreamListener("a", registry=CollectorRegistry())
    shared_upstream = CollectorRegistry()
    UpstreamListener("a", registry=shared_upstream)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        UpstreamListener("b", registry=shared_upstream)

    listeners = [PrometheusListener(f"circuit_{i}", registry) for i in range(3)]
    for listener in listeners:
        listener(Signal("closed", "open", 0.0))
    assert [count(registry, f"circuit_{i}", "closed", "open") for i in range(3)] == [1.0] * 3


def test_upstream_listener_on_the_same_custom_registry_shares_the_series(registry):
    upstream = UpstreamListener("mixed", registry=registry)
    ours = PrometheusListener("mixed", registry)
    upstream(Signal("closed", "open", 0.0))
    ours(Signal("closed", "open", 1.0))
    assert count(registry, "mixed", "closed", "open") == 2.0
    # Upstream writes the gauge too, so ours writes all six series, never just the two it moves.
    upstream(Signal("open", "forced_open", 2.0))
    ours(Signal("forced_open", "half_open", 3.0))
    assert shown(registry, "mixed") == "half_open"


@contextmanager
def on_the_default_registry(name: str) -> Iterator[tuple[PrometheusListener, UpstreamListener]]:
    """Ours and upstream's listener for ``name`` on the default registry; its series go after."""
    ours = PrometheusListener(name)
    upstream = UpstreamListener(name)
    try:
        yield ours, upstream
    finally:
        ours.close()
    assert samples(REGISTRY, name) == {}


def test_default_registry_is_shared_with_upstreams_module_level_metrics():
    name = "default_registry_shared"
    with on_the_default_registry(name) as (ours, upstream):
        upstream(Signal("closed", "open", 0.0))
        ours(Signal("open", "half_open", 1.0))
        ours(Signal("half_open", "open", 2.0))
        assert count(REGISTRY, name, "closed", "open") == 1.0
        assert count(REGISTRY, name, "half_open", "open") == 1.0
        assert shown(REGISTRY, name) == "open"


def test_after_upstreams_close_our_series_come_back_on_the_default_registry():
    name = "shared_then_closed_by_upstream"
    with on_the_default_registry(name) as (ours, upstream):
        ours(Signal("closed", "open", 0.0))
        upstream(Signal("open", "half_open", 1.0))
        assert count(REGISTRY, name, "closed", "open") == 1.0
        upstream.close()  # removes every series of the name from the metrics we share
        assert samples(REGISTRY, name) == {}
        ours(Signal("half_open", "open", 2.0))
        assert shown(REGISTRY, name) == "open"
        assert gauge(REGISTRY, name)["half_open"] == 0.0
        assert count(REGISTRY, name, "half_open", "open") == 1.0
        assert count(REGISTRY, name, "closed", "open") == 0.0  # the zeros come back too
        ours(Signal("open", "half_open", 3.0))
        ours(Signal("half_open", "closed", 4.0))
        assert shown(REGISTRY, name) == "closed"
        assert count(REGISTRY, name, "open", "half_open") == 1.0
        upstream.close()
        ours(Signal("closed", "open", 5.0))
        assert count(REGISTRY, name, "closed", "open") == 1.0
        assert shown(REGISTRY, name) == "open"


def test_reloading_our_modules_keeps_series_working_without_duplicate_registration():
    # In a child process: reloading modules would leave this test session with two of each class.
    result = run_python(CHILDREN / "reload_the_listener_modules.py")
    assert result.stdout.split("\n")[:2] == ["1.0 1.0", "1.0 2.0"]


def test_close_drops_every_series_of_the_circuit_only(registry):
    keep = PrometheusListener("keep", registry)
    drop = PrometheusListener("drop", registry)
    for old, new in TRANSITIONS:
        drop(Signal(old, new, 0.0))
    keep(Signal("closed", "open", 0.0))
    drop.close()
    assert samples(registry, "drop") == {}
    assert shown(registry, "keep") == "open"
    drop.close()  # idempotent
    assert samples(registry, "drop") == {}
    drop(Signal("closed", "open", 0.0))
    assert shown(registry, "drop") == "open"
    assert count(registry, "drop", "closed", "open") == 1.0
    assert count(registry, "drop", "open", "half_open") == 0.0  # back with the series
    assert count(registry, "drop", "closed", "forced_open") is None


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (None, TypeError, "PrometheusListener expects a fluxgate.signal.Signal, got NoneType"),
        ("open", TypeError, "PrometheusListener expects a fluxgate.signal.Signal, got str"),
        (
            Signal("closed", "opened", 0.0),
            ValueError,
            "Signal.new_state must be one of closed, open, half_open, metrics_only, disabled, "
            "forced_open; got 'opened'",
        ),
        (
            Signal("CLOSED", "open", 0.0),
            ValueError,
            "Signal.old_state must be one of closed, open, half_open, metrics_only, disabled, "
            "forced_open; got 'CLOSED'",
        ),
    ],
)
def test_bad_signals_raise_at_the_call_site_and_change_nothing(registry, bad, error, message):
    listener = PrometheusListener("strict", registry)
    before = samples(registry)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        listener(bad)
    assert samples(registry) == before


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("", ValueError, "name must be a non-empty str"),
        (None, TypeError, "name must be a str, got NoneType"),
        (b"api", TypeError, "name must be a str, got bytes"),
    ],
)
def test_bad_names_raise_at_construction(registry, name, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        PrometheusListener(name, registry)


def test_bad_initial_state_and_pipeline_raise_at_construction(registry):
    with pytest.raises(ValueError, match=r"^initial_state must be one of closed, .*; got 'shut'$"):
        PrometheusListener("api", registry, initial_state="shut")
    with pytest.raises(TypeError, match=r"^pipeline must be a SignalPipeline, got int$"):
        PrometheusListener("api", registry, pipeline=3)


@pytest.mark.parametrize(
    ("size", "error", "message"),
    [
        (0, ValueError, "max_buffer_size must be at least 1, got 0"),
        (-5, ValueError, "max_buffer_size must be at least 1, got -5"),
        (1.5, TypeError, "max_buffer_size must be an int, got float"),
        (True, TypeError, "max_buffer_size must be an int, got bool"),
    ],
)
def test_bad_buffer_sizes_raise(size, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        SignalPipeline(size)


@pytest.mark.parametrize(
    ("window", "error", "message"),
    [
        (-0.001, ValueError, "batch_window must be a finite number of seconds >= 0, got -0.001"),
        (float("inf"), ValueError, "batch_window must be a finite number of seconds >= 0, got inf"),
        (float("nan"), ValueError, "batch_window must be a finite number of seconds >= 0, got nan"),
        ("1ms", TypeError, "batch_window must be a number of seconds, got str"),
        (False, TypeError, "batch_window must be a number of seconds, got bool"),
    ],
)
def test_bad_batch_windows_raise(window, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        SignalPipeline(batch_window=window)


def test_a_registry_with_a_foreign_metric_of_our_name_is_refused_clearly(registry):
    Counter("circuit_breaker_state", "someone else's", registry=registry)
    with pytest.raises(
        ValueError,
        match=r"^registry already has a Counter named 'circuit_breaker_state'; "
        r"fluxgate-stream needs a Gauge there$",
    ):
        PrometheusListener("api", registry)


def test_a_registry_with_our_gauge_under_other_labels_is_refused_clearly(registry):
    Gauge("circuit_breaker_state", "someone else's", ["service"], registry=registry)
    with pytest.raises(
        ValueError,
        match=r"^registry's 'circuit_breaker_state' has labels \('service',\); "
        r"fluxgate-stream needs \('circuit_name', 'state'\)$",
    ):
        PrometheusListener("api", registry)


def test_unicode_and_long_names_are_label_values_like_any_other(registry):
    names = ["paiement-ü", "決済", "x" * 256]  # the longest allowed
    for name, (old, new) in itertools.product(names, TRANSITIONS[:2]):
        PrometheusListener(name, registry)(Signal(old, new, 0.0))
    for name in names:
        assert shown(registry, name) == "half_open"
