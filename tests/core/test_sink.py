"""StreamingListener: users' own metrics, written on the consumer from coalesced transitions."""

from __future__ import annotations

import threading

import pytest
from fluxgate.signal import Signal
from prometheus_client import Counter

from fluxgate_stream import (
    PrometheusListener,
    SignalPipeline,
    StreamingListener,
    Transitions,
    default_pipeline,
)

from ..support.helpers import Consumer, wait_until

pytestmark = pytest.mark.anyio


class Recording:
    def __init__(self) -> None:
        self.writes: list[Transitions] = []
        self.threads: set[int] = set()

    def write(self, transitions: Transitions) -> None:
        self.writes.append(transitions)
        self.threads.add(threading.get_ident())


async def test_sink_gets_coalesced_transitions_on_the_consumer(anyio_backend, registry):
    pipeline = SignalPipeline()
    sink = Recording()
    listener = StreamingListener("payments", sink, pipeline=pipeline)
    opened = Counter("opened", "opens", ["circuit_name"], registry=registry)

    class Opens:
        def write(self, transitions: Transitions) -> None:
            n = sum(v for (_, new), v in transitions.counts.items() if new == "open")
            opened.labels(transitions.name).inc(n)

    counter = StreamingListener("payments", Opens(), pipeline=pipeline)
    async with Consumer(pipeline):
        for _ in range(10):
            for each in (listener, counter):
                each(Signal("closed", "open", 0.0))
                each(Signal("open", "half_open", 0.0))
        listener.close()
        listener(Signal("half_open", "closed", 0.0))
        assert sink.writes == []  # nothing ran in the caller's path
        await pipeline.flush()
    assert sink.writes == [
        Transitions("payments", closed=True, state="closed", counts={("half_open", "closed"): 1})
    ]
    assert sink.threads == {threading.get_ident()}  # the consumer runs on the loop thread
    assert registry.get_sample_value("opened_total", {"circuit_name": "payments"}) == 10.0


async def test_sink_without_consumer_runs_inline(anyio_backend):
    sink = Recording()
    listener = StreamingListener("inline", sink, pipeline=SignalPipeline())
    listener(Signal("closed", "open", 0.0))
    assert sink.writes == [Transitions("inline", False, "open", {("closed", "open"): 1})]


def test_sink_must_have_a_write_method():
    with pytest.raises(TypeError, match=r"^sink must have a write\(transitions\) method, got int$"):
        StreamingListener("x", 3)


def test_listeners_without_pipeline_share_the_default_pipeline(registry):
    a = PrometheusListener("a", registry)
    b = StreamingListener("b", Recording())
    assert a.pipeline is b.pipeline is default_pipeline()
    assert (
        repr(a)
        == "PrometheusListener(name='a', pipeline=<SignalPipeline max_buffer_size=1024 stopped>)"
    )


async def test_a_sink_is_never_written_in_the_call_not_even_for_a_lone_transition(
    anyio_backend,
):
    pipeline = SignalPipeline(batch_window=3600.0)
    sink = Recording()
    listener = StreamingListener("quiet", sink, pipeline=pipeline)
    async with Consumer(pipeline):
        await wait_until(lambda: pipeline._state.sleeping)
        listener(Signal("closed", "open", 0.0))  # a PrometheusListener would apply this one
        assert sink.writes == []
        await pipeline.flush()
    assert sink.writes == [
        Transitions("quiet", closed=False, state="open", counts={("closed", "open"): 1})
    ]
    assert pipeline.stats()["direct"] == 0


async def test_the_default_pipeline_runs_like_any_other(anyio_backend, registry):
    listener = PrometheusListener("default", registry)
    labels = {"circuit_name": "default", "state": "open"}
    async with Consumer(default_pipeline()):
        listener.close()  # never lone: queued
        assert registry.get_sample_value("circuit_breaker_state", labels) == 0.0
        await default_pipeline().flush()
        assert registry.get_sample_value("circuit_breaker_state", labels) is None
        listener(Signal("closed", "open", 0.0))  # lone, or queued: flush() tells them apart
        await default_pipeline().flush()
        assert registry.get_sample_value("circuit_breaker_state", labels) == 1.0
    assert not default_pipeline().running
