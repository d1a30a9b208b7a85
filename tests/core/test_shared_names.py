"""Several listeners behind one ``circuit_name``: what the gauge shows, and the warning.

The contract (docs/guarantees.md, "Several listeners, one circuit name"): listeners that share a
(registry, name) write the same series, as upstream's listeners do, so the gauge shows the latest
signal applied; the second listener alive for a name is warned about, once per circuit.
"""

from __future__ import annotations

import gc
import logging

import pytest
from fluxgate import CircuitBreaker
from fluxgate.listeners.prometheus import PrometheusListener as UpstreamListener
from fluxgate.trippers import FailureStreak
from prometheus_client import REGISTRY, CollectorRegistry

from fluxgate_stream import PrometheusListener

from ..support.metrics import shown


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "fluxgate_stream" and record.levelno == logging.WARNING
    ]


def test_a_second_live_listener_for_one_name_is_warned_about_once(registry, caplog):
    with caplog.at_level(logging.WARNING, logger="fluxgate_stream"):
        first = PrometheusListener("payment_api", registry)
        PrometheusListener("payment_api", CollectorRegistry())  # another registry: other series
        PrometheusListener("inventory_api", registry)  # another name
        assert warnings_logged(caplog) == []
        second = PrometheusListener("payment_api", registry)
        third = PrometheusListener("payment_api", registry)
    [message] = warnings_logged(caplog)  # once per circuit, not per listener
    assert message.startswith("circuit_name 'payment_api' now has 2 live listeners in one registry")
    assert "ThreadSafeCircuitBreaker" in message
    assert first is not second is not third


def test_a_listener_that_replaces_a_collected_one_is_not_warned_about(registry, caplog):
    with caplog.at_level(logging.WARNING, logger="fluxgate_stream"):
        listener = PrometheusListener("recreated", registry)
        del listener
        gc.collect()
        PrometheusListener("recreated", registry)  # e.g. the app built again, the old one gone
    assert warnings_logged(caplog) == []


def test_several_breakers_behind_one_name_show_the_last_to_move_exactly_as_upstream(caplog):
    # The hazard the warning names: breaker a is open, breaker b moved last, so "closed" shows.
    ours = CollectorRegistry()
    theirs = "shared_names_upstream"  # upstream's listeners share the default registry's metrics
    with caplog.at_level(logging.WARNING, logger="fluxgate_stream"):
        a, b = (
            CircuitBreaker(
                tripper=FailureStreak(1),
                listeners=[PrometheusListener("shared", ours), UpstreamListener(theirs)],
            )
            for _ in range(2)
        )
    try:
        with pytest.raises(ConnectionError):
            a.call(_fail)
        b.force_open()
        b.reset()
        assert a.info().state == "open"
        assert shown(ours, "shared") == "closed"  # b's reset was applied last
        assert shown(REGISTRY, theirs) == "closed"  # as upstream's listeners export it
        assert len(warnings_logged(caplog)) == 1
    finally:
        UpstreamListener(theirs).close()


def _fail() -> None:
    raise ConnectionError("down")
