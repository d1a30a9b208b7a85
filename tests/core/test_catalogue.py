"""The metric catalogue is what is exported: every family, its type, help and labels."""

from __future__ import annotations

from fluxgate import CircuitBreaker
from fluxgate.listeners.prometheus import PrometheusListener as UpstreamListener
from fluxgate.signal import Signal
from fluxgate.trippers import MinRequests, SlowRate
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fluxgate_stream import (
    PrometheusListener,
    SignalPipeline,
    export_metrics,
    meter_calls,
    watch,
)
from fluxgate_stream import _catalogue as catalogue


def exported(registry: CollectorRegistry) -> dict[str, tuple[str, str, frozenset[str]]]:
    """Family name -> (type, help, label names of its samples) as a scrape shows them."""
    text = generate_latest(registry).decode()
    families = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # a counter's creation time, not a family of ours
            continue
        labels = frozenset(name for sample in family.samples for name in sample.labels)
        families[family.name] = (family.type, family.documentation, labels)
    return families


def test_upstreams_two_metrics_are_spelled_as_upstream_spells_them():
    registry = CollectorRegistry()
    UpstreamListener("payment_api", registry)(Signal("closed", "open", 0.0))
    families = exported(registry)
    for spec in (catalogue.STATE, catalogue.TRANSITIONS):
        assert families[spec.name] == (spec.kind, spec.help, frozenset(spec.labels))


def test_every_family_exported_is_in_the_catalogue_and_every_entry_is_exported():
    registry = CollectorRegistry()
    pipeline = SignalPipeline()
    listener = PrometheusListener("payment_api", registry, pipeline=pipeline, time_in_state=True)
    listener(Signal("closed", "open", 0.0))
    breaker = CircuitBreaker(tripper=MinRequests(1) & SlowRate(0.5, threshold=1.0))
    breaker.call(lambda: None)
    watch(breaker, "payment_api", registry)
    meter_calls(breaker, "payment_api", registry, pipeline=pipeline)
    export_metrics(pipeline, registry)
    families = exported(registry)
    assert set(families) == {spec.name for spec in catalogue.ALL}
    for spec in catalogue.ALL:
        labels = {*spec.labels, "le"} if spec.kind == "histogram" else set(spec.labels)
        assert families[spec.name] == (spec.kind, spec.help, frozenset(labels)), spec.name


def test_a_counters_samples_carry_the_total_suffix():
    assert catalogue.TRANSITIONS.sample == "circuit_breaker_state_transition_total"
    assert catalogue.STATE.sample == "circuit_breaker_state"
    assert len({spec.name for spec in catalogue.ALL}) == len(catalogue.ALL)
