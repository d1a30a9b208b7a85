"""Property: whatever path each signal takes, counts are exact and the latest state wins.

Hypothesis draws interleavings of loop-thread calls, thread calls, ``close()`` from either,
consumer starts and stops, and tiny buffers; a plain model replays the same operations in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from fluxgate.signal import Signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from fluxgate_stream import ALL_STATES, PrometheusListener, SignalPipeline
from fluxgate_stream._catalogue import OWN_TRANSITIONS

from ..support.helpers import Consumer, in_thread
from ..support.metrics import samples

pytestmark = pytest.mark.anyio

CIRCUITS = 3
states = st.sampled_from(ALL_STATES)
operation = st.one_of(
    st.tuples(st.just("signal"), st.integers(0, CIRCUITS - 1), states, states, st.booleans()),
    st.tuples(st.just("close"), st.integers(0, CIRCUITS - 1), st.booleans()),
    st.tuples(st.just("start")),
    st.tuples(st.just("stop")),
    st.tuples(st.just("flush")),
)


@dataclass
class Model:
    """What the metrics must show after replaying the operations in order."""

    state: dict[int, str | None] = field(
        default_factory=lambda: dict.fromkeys(range(CIRCUITS), "closed")
    )
    counts: dict[tuple[int, str, str], int] = field(default_factory=dict)

    def signal(self, circuit: int, old: str, new: str) -> None:
        self.state[circuit] = new
        self.counts[circuit, old, new] = self.counts.get((circuit, old, new), 0) + 1

    def close(self, circuit: int) -> None:
        self.state[circuit] = None
        self.counts = {k: v for k, v in self.counts.items() if k[0] != circuit}

    def expected(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for circuit, shown in self.state.items():
            if shown is not None:
                for state in ALL_STATES:
                    labels = (("circuit_name", f"c{circuit}"), ("state", state))
                    out["circuit_breaker_state", labels] = float(state == shown)
                for old, new in OWN_TRANSITIONS:  # at 0 whenever the circuit has series
                    labels = (
                        ("circuit_name", f"c{circuit}"),
                        ("new_state", new),
                        ("old_state", old),
                    )
                    out["circuit_breaker_state_transition_total", labels] = 0.0
        for (circuit, old, new), n in self.counts.items():
            labels = (("circuit_name", f"c{circuit}"), ("new_state", new), ("old_state", old))
            out["circuit_breaker_state_transition_total", labels] = float(n)
        return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(operation, max_size=60), buffer=st.integers(1, 4))
async def test_counts_exact_and_latest_state_wins_on_every_path(anyio_backend, ops, buffer):
    registry = CollectorRegistry()
    pipeline = SignalPipeline(max_buffer_size=buffer)
    listeners = [PrometheusListener(f"c{i}", registry, pipeline=pipeline) for i in range(CIRCUITS)]
    model = Model()
    consumer = Consumer(pipeline)
    try:
        for op in ops:
            if op[0] == "signal":
                _, circuit, old, new, from_thread = op
                signal = Signal(old, new, 0.0)
                if from_thread:
                    in_thread(listeners[circuit], signal)
                else:
                    listeners[circuit](signal)
                model.signal(circuit, old, new)
            elif op[0] == "close":
                _, circuit, from_thread = op
                if from_thread:
                    in_thread(listeners[circuit].close)
                else:
                    listeners[circuit].close()
                model.close(circuit)
            elif op[0] == "start" and not pipeline.running:
                await consumer.start()
            elif op[0] == "stop" and pipeline.running:
                await consumer.stop()
            elif op[0] == "flush":
                await pipeline.flush()
                assert samples(registry) == model.expected()
        await pipeline.flush()
        assert samples(registry) == model.expected()
    finally:
        if pipeline.running:
            await consumer.stop()
    assert samples(registry) == model.expected()
