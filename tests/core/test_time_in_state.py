"""Time in state: seconds per state from the signals' own timestamps, exact, never decreasing."""

from __future__ import annotations

import importlib
import itertools
import re
import time

import anyio
import pytest
from fluxgate.signal import Signal
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge

from fluxgate_stream import ALL_STATES, PrometheusListener, SignalPipeline
from fluxgate_stream import _circuits as series
from fluxgate_stream._apply import Tally, apply
from fluxgate_stream._circuits import Circuit, circuit_for
from fluxgate_stream.anyio_breaker import AnyioCircuitBreaker
from fluxgate_stream.time_in_state import MULTIPROCESS_MESSAGE, Span, StateClock

from ..support.breakers import Recorder, adrive, async_breaker, drive, quick, sync_breaker
from ..support.helpers import Consumer
from ..support.metrics import count, shown
from ..support.processes import run_multiprocess_worker

SECONDS = "circuit_breaker_state_seconds_total"


def seconds(registry: CollectorRegistry, name: str) -> dict[str, float | None]:
    """The six time-in-state series of circuit ``name`` (None where absent), from one scrape."""
    out: dict[str, float | None] = dict.fromkeys(ALL_STATES)
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == SECONDS and sample.labels["circuit_name"] == name:
                out[sample.labels["state"]] = sample.value
    return out


def truth(signals: list[Signal]) -> dict[str, float]:
    """The seconds each state was entered for, between consecutive signals (the last one open)."""
    out = dict.fromkeys(ALL_STATES, 0.0)
    for before, after in itertools.pairwise(signals):
        out[before.new_state] += max(0.0, after.timestamp - before.timestamp)
    return out


def let_time_pass(seconds: float) -> None:
    """Wall time must pass for a clock to count it; nothing else is waited for."""
    time.sleep(seconds)  # sleep-ok: the point is that wall time passes, not to wait for work


def accruing(registry: CollectorRegistry, name: str) -> set[str]:
    """The states of circuit ``name`` whose seconds grow while 20 ms pass."""
    before = seconds(registry, name)
    let_time_pass(0.02)
    after = seconds(registry, name)
    return {state for state in ALL_STATES if (after[state] or 0.0) > (before[state] or 0.0)}


def at(old: str, new: str, timestamp: object) -> Signal:
    return Signal(old_state=old, new_state=new, timestamp=timestamp)  # type: ignore[arg-type]  # states checked by the listener


# -- off by default, on per circuit ----------------------------------------------------------------


def test_off_by_default_exports_exactly_upstreams_series(registry):
    listener = PrometheusListener("payment_api", registry)
    listener(at("closed", "open", time.time()))
    names = {family.name for family in registry.collect()}
    assert names == {"circuit_breaker_state", "circuit_breaker_state_transition"}
    # and an untimed listener refuses a timestamp that is not a number too: it is never queued
    with pytest.raises(TypeError, match=r"^Signal\.timestamp must be a number of seconds"):
        listener(Signal(old_state="open", new_state="half_open", timestamp=None))  # type: ignore[arg-type]  # deliberately bad
    assert shown(registry, "payment_api") == "open"


def test_a_new_circuit_counts_its_initial_state_from_creation(registry):
    before = time.time()
    PrometheusListener("payment_api", registry, time_in_state=True)
    first = seconds(registry, "payment_api")
    now = time.time()
    assert first == {**dict.fromkeys(ALL_STATES, 0.0), "closed": first["closed"]}
    assert 0.0 <= first["closed"] <= now - before
    let_time_pass(0.05)
    assert seconds(registry, "payment_api")["closed"] >= first["closed"] + 0.05


def test_exact_seconds_per_state_from_the_signals_timestamps(registry):
    listener = PrometheusListener("payment_api", registry, initial_state=None, time_in_state=True)
    assert seconds(registry, "payment_api") == dict.fromkeys(ALL_STATES)  # nothing before a signal
    base = time.time() - 100.0
    signals = [
        at("closed", "open", base),
        at("open", "half_open", base + 30.0),
        at("half_open", "open", base + 30.25),
        at("open", "half_open", base + 60.25),
        at("half_open", "closed", base + 60.5),
    ]
    for signal in signals:
        listener(signal)
    before = time.time()
    values = seconds(registry, "payment_api")
    after = time.time()
    assert values["open"] == 60.0
    assert values["half_open"] == 0.5
    assert values["metrics_only"] == values["disabled"] == values["forced_open"] == 0.0
    # closed: the current state, counted up to the scrape
    assert after - (base + 60.5) >= values["closed"] >= before - (base + 60.5)


def test_timing_is_per_circuit_and_shared_by_its_listeners(registry):
    plain = PrometheusListener("payment_api", registry)
    plain(at("closed", "open", time.time()))
    assert seconds(registry, "payment_api")["open"] is None
    PrometheusListener("payment_api", registry, time_in_state=True)  # counts from here, in open
    PrometheusListener("other", registry)  # another circuit stays untimed
    assert seconds(registry, "payment_api")["closed"] == 0.0
    assert seconds(registry, "other") == dict.fromkeys(ALL_STATES)
    # the untimed listener of the now-timed circuit feeds the clock, and its input is checked
    with pytest.raises(ValueError, match=r"^Signal\.timestamp must be finite, got inf$"):
        plain(at("open", "half_open", float("inf")))
    plain(at("open", "half_open", time.time() + 10.0))
    assert seconds(registry, "payment_api")["open"] >= 10.0


# -- real breakers, through the consumer -------------------------------------------------------


def assert_matches_truth(registry, name: str, recorder: Recorder) -> None:
    """Each state holds what the recorded timestamps say; the current one up to the scrape.

    The circuit's listener has ``initial_state=None``: nothing is counted before its first signal.
    """
    expected = truth(recorder.signals)
    current = recorder.signals[-1]
    before = time.time()
    values = seconds(registry, name)
    after = time.time()
    for state in ALL_STATES:
        if state == current.new_state:
            low = expected[state] + before - current.timestamp
            high = expected[state] + after - current.timestamp
            assert low <= values[state] <= high, (state, values)
        else:
            assert values[state] == pytest.approx(expected[state], abs=1e-9), (state, values)


@pytest.mark.anyio
async def test_an_open_episode_shorter_than_a_scrape_interval_is_counted_exactly(
    anyio_backend, registry
):
    recorder = Recorder()
    pipeline = SignalPipeline()
    listener = PrometheusListener(
        "payment_api", registry, pipeline=pipeline, initial_state=None, time_in_state=True
    )
    cb = AnyioCircuitBreaker(**quick([recorder, listener]))  # type: ignore[arg-type]  # test settings
    async with Consumer(pipeline):
        await adrive(cb, "xx")  # closed -> open
        await pipeline.flush()
        first_scrape = (shown(registry, "payment_api"), seconds(registry, "payment_api"))
        # between two scrapes: open -> half_open -> closed -> open -> half_open -> closed
        await adrive(cb, ".xx.")
        await pipeline.flush()
        second_scrape = (shown(registry, "payment_api"), seconds(registry, "payment_api"))
    transitions = [(s.old_state, s.new_state) for s in recorder.signals]
    assert transitions == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert first_scrape[0] == "open"
    assert second_scrape[0] == "closed"  # a 0/1 gauge sampled here saw no second open ...
    open_episode = recorder.signals[4].timestamp - recorder.signals[3].timestamp
    assert 0 < open_episode < 1.0
    # ... the counter has every microsecond of both opens, from the breaker's own timestamps
    opened = second_scrape[1]["open"]
    assert opened == pytest.approx(truth(recorder.signals)["open"], abs=1e-9)
    assert opened > first_scrape[1]["open"] + open_episode * 0.999
    assert_matches_truth(registry, "payment_api", recorder)


@pytest.mark.anyio
async def test_sync_breakers_in_worker_threads_count_exactly(anyio_backend, registry):
    pipeline = SignalPipeline()
    recorders = [Recorder() for _ in range(4)]
    breakers = [
        sync_breaker(
            recorder,
            PrometheusListener(
                f"c{i}", registry, pipeline=pipeline, initial_state=None, time_in_state=True
            ),
        )
        for i, recorder in enumerate(recorders)
    ]
    async with Consumer(pipeline), anyio.create_task_group() as tg:
        for cb in breakers:
            tg.start_soon(anyio.to_thread.run_sync, drive, cb, "xx.xx.xx")
    await pipeline.flush()
    for i, recorder in enumerate(recorders):
        assert len(recorder.signals) == 7  # open, half_open, closed, open, ..., open
        assert_matches_truth(registry, f"c{i}", recorder)


@pytest.mark.anyio
async def test_fluxgates_async_breaker_counts_exactly(anyio_backend, registry):
    if anyio_backend == "trio":
        pytest.skip("fluxgate's AsyncCircuitBreaker uses asyncio primitives: asyncio only")
    recorder = Recorder()
    pipeline = SignalPipeline()
    listener = PrometheusListener(
        "api", registry, pipeline=pipeline, initial_state=None, time_in_state=True
    )
    cb = async_breaker(recorder, listener)
    async with Consumer(pipeline):
        await adrive(cb, "xx.xx.")  # type: ignore[arg-type]  # adrive takes either async breaker
        await pipeline.flush()
        assert_matches_truth(registry, "api", recorder)


def test_a_plain_script_counts_through_the_sync_fallback(registry):
    recorder = Recorder()
    listener = PrometheusListener("script", registry, initial_state=None, time_in_state=True)
    cb = sync_breaker(recorder, listener)
    drive(cb, "xx.xx")
    assert shown(registry, "script") == "open"
    assert_matches_truth(registry, "script", recorder)


# -- the rules: order, late signals, the clock, monotonic export -------------------------------


def timed_circuit(registry: CollectorRegistry, name: str = "c") -> Circuit:
    return circuit_for(registry, name, None, time_in_state=True)


def apply_items(*items: tuple[int, Circuit, Signal | None], in_order: bool = True) -> None:
    """One tally of explicitly numbered items, applied as a batch is (sorted by sequence).

    Sequence numbers count from when the circuit's timing began (as if queued after it).
    ``in_order=False`` adds them as given, as the overflow ledger does with what threads queue.
    """
    tally = Tally()
    for seq, circuit, signal in sorted(items, key=lambda item: item[0]) if in_order else items:
        assert circuit.clock is not None
        tally.add((circuit.clock.start_seq + seq, circuit, signal))
    assert apply(tally) == 0


def test_a_late_signal_counts_as_a_transition_but_moves_no_time(registry):
    circuit = timed_circuit(registry)
    base = time.time() - 100.0
    apply_items((1, circuit, at("closed", "open", base)))
    apply_items((3, circuit, at("half_open", "closed", base + 30.0)))
    apply_items((2, circuit, at("open", "half_open", base + 20.0)))  # late: 2 < 3
    values = seconds(registry, "c")
    assert values["open"] == 30.0  # what the consumer knew when seq 3 arrived, never revised
    assert values["half_open"] == 0.0
    assert shown(registry, "c") == "closed"  # latest state wins
    assert (
        registry.get_sample_value(
            "circuit_breaker_state_transition_total",
            {"circuit_name": "c", "old_state": "open", "new_state": "half_open"},
        )
        == 1.0
    )


def test_a_batch_holding_a_late_signal_gives_its_stretch_to_the_known_state(registry):
    circuit = timed_circuit(registry)
    base = time.time() - 100.0
    apply_items((1, circuit, at("closed", "open", base)), (5, circuit, at("open", "closed", base)))
    # seq 3 is late (older than 5, applied already); 7 and 9 are new, in the same batch
    apply_items(
        (3, circuit, at("closed", "metrics_only", base + 1.0)),
        (7, circuit, at("closed", "disabled", base + 4.0)),
        (9, circuit, at("disabled", "closed", base + 10.0)),
    )
    now = time.time()  # before the scrape, which counts up to a later time: load cannot fail it
    values = seconds(registry, "c")
    assert values["closed"] >= 10.0 + (now - (base + 10.0)) - 1.0
    assert values["open"] == values["metrics_only"] == values["disabled"] == 0.0


def test_a_late_signal_within_one_tally_moves_no_time(registry):
    circuit = timed_circuit(registry)
    base = time.time() - 100.0
    apply_items(
        (1, circuit, at("closed", "open", base)),
        (3, circuit, at("half_open", "closed", base + 30.0)),
        (2, circuit, at("open", "half_open", base + 20.0)),  # late within the ledger
        in_order=False,
    )
    values = seconds(registry, "c")
    assert (values["open"], values["half_open"]) == (30.0, 0.0)
    assert shown(registry, "c") == "closed"


def test_batches_in_order_are_exact_however_they_are_cut(registry):
    circuit = timed_circuit(registry)
    base = time.time() - 100.0
    steps = [("closed", "open", 0.0), ("open", "half_open", 7.5), ("half_open", "open", 8.0)]
    steps += [("open", "forced_open", 20.0), ("forced_open", "closed", 21.0)]
    items = [(seq, circuit, at(old, new, base + t)) for seq, (old, new, t) in enumerate(steps)]
    apply_items(items[0])
    apply_items(items[1], items[2])
    apply_items(items[3], items[4])
    values = seconds(registry, "c")
    assert (values["open"], values["half_open"], values["forced_open"]) == (19.5, 0.5, 1.0)


def test_a_clock_going_backwards_counts_zero_and_resumes_from_the_new_reading(registry):
    listener = PrometheusListener("c", registry, initial_state=None, time_in_state=True)
    base = time.time() - 1000.0
    listener(at("closed", "open", base + 100.0))
    listener(at("open", "half_open", base + 40.0))  # 60 s back: the open interval counts 0
    listener(at("half_open", "closed", base + 45.0))  # counting resumes from the new reading
    listener(at("closed", "open", base + 50.0))
    listener(at("open", "closed", base + 52.0))
    values = seconds(registry, "c")
    assert values["open"] == 2.0
    assert values["half_open"] == 5.0
    assert values["closed"] >= 5.0 + 900.0  # 45 -> 50, then 52 -> now


@pytest.mark.anyio
async def test_the_export_never_decreases_when_a_scrape_lands_before_an_apply(
    anyio_backend, registry
):
    pipeline = SignalPipeline(lone=False)  # the transition waits for the consumer
    listener = PrometheusListener("c", registry, pipeline=pipeline, time_in_state=True)
    async with Consumer(pipeline):
        # The transition happened 5 s ago but the consumer has not had the loop since.
        listener(at("closed", "open", time.time() - 5.0))
        early = seconds(registry, "c")  # still closed, counted up to now
        await pipeline.flush()
        late = seconds(registry, "c")
    assert early["open"] == 0.0
    assert late["closed"] == early["closed"]  # held, not revised down by ~5 s
    assert late["open"] >= 5.0


def test_close_drops_the_series_and_the_next_transition_starts_from_zero(registry):
    listener = PrometheusListener("c", registry, time_in_state=True)
    base = time.time() - 100.0
    listener(at("closed", "open", base))
    listener(at("open", "closed", base + 50.0))
    assert seconds(registry, "c")["open"] == 50.0
    listener.close()
    assert seconds(registry, "c") == dict.fromkeys(ALL_STATES)
    listener(at("closed", "open", base + 60.0))
    listener(at("open", "half_open", base + 61.0))
    values = seconds(registry, "c")
    assert values["open"] == 1.0
    assert values["closed"] == 0.0  # nothing before the first transition after close()


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(ALL_STATES),
            st.floats(min_value=-5.0, max_value=50.0, allow_nan=False),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_property_totals_are_exact_whatever_the_batches(steps):
    # Timestamps may go backwards (negative steps); cuts split the signals into batches.
    registry = CollectorRegistry()
    circuit = timed_circuit(registry)
    base = time.time() - 10_000.0
    signals: list[Signal] = []
    state, clock = "closed", base
    for new, step, _ in steps:
        clock += step
        signals.append(at(state, new, clock))
        state = new
    batch: list[tuple[int, Circuit, Signal | None]] = []
    for seq, (signal, (_, _, cut)) in enumerate(zip(signals, steps, strict=True)):
        batch.append((seq, circuit, signal))
        if cut:
            apply_items(*batch)
            batch = []
    if batch:
        apply_items(*batch)
    values = seconds(registry, "c")
    expected = truth(signals)
    for each in ALL_STATES:
        if each != state:
            assert values[each] == pytest.approx(expected[each], abs=1e-6), each
    assert values[state] >= expected[state]


# -- timing turned on late, bad timestamps queued earlier, shared circuits ----------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad",
    [
        (
            10**400,
            ValueError,
            "Signal.timestamp must be a number of seconds a float can hold, "
            "got an int of 1329 bits",
        ),
        (None, TypeError, "Signal.timestamp must be a number of seconds, got NoneType"),
        (True, TypeError, "Signal.timestamp must be a number of seconds, got bool"),
        (float("inf"), ValueError, "Signal.timestamp must be finite, got inf"),
        (float("nan"), ValueError, "Signal.timestamp must be finite, got nan"),
    ],
    ids=["int-too-large", "none", "bool", "inf", "nan"],
)
async def test_a_bad_timestamp_is_refused_by_untimed_and_timed_listeners_alike(
    anyio_backend, registry, bad
):
    """Never queued, so it can neither reach nor kill the consumer once the circuit is timed."""
    pipeline = SignalPipeline()
    plain = PrometheusListener("c", registry, pipeline=pipeline)
    other = PrometheusListener("other", registry, pipeline=pipeline)
    timed = PrometheusListener("t", registry, pipeline=pipeline, time_in_state=True)
    timestamp, error, message = bad
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        plain(at("closed", "open", time.time()))
        for listener in (plain, timed):
            with pytest.raises(error, match=f"^{re.escape(message)}$"):
                listener(at("open", "half_open", timestamp))
        other(at("closed", "open", time.time()))  # another circuit, in the same batch
        PrometheusListener("c", registry, pipeline=pipeline, time_in_state=True)
        await pipeline.flush()
        assert pipeline.running
        assert shown(registry, "other") == "open"
        assert shown(registry, "c") == "open"
        assert count(registry, "c", "open", "half_open") == 0.0
        tg.cancel_scope.cancel()
    assert not pipeline.running  # the task group ended by its own cancellation, nothing raised
    with pytest.raises(error, match=f"^{re.escape(message)}$"):  # no consumer: the same
        plain(at("open", "half_open", timestamp))
    assert shown(registry, "c") == "open"


@pytest.mark.anyio
async def test_signals_queued_before_timing_move_the_clock_with_the_gauge(anyio_backend, registry):
    # max_buffer_size=1: the stream takes what it can, the overflow ledger the rest (none lone)
    pipeline = SignalPipeline(max_buffer_size=1, lone=False)
    plain = PrometheusListener("c", registry, pipeline=pipeline)
    async with Consumer(pipeline):
        plain(at("closed", "open", time.time() - 100.0))
        plain(at("open", "half_open", time.time() - 50.0))
        plain(at("half_open", "forced_open", time.time() - 40.0))
        assert pipeline.stats()["overflow"] >= 1
        started = time.time()
        PrometheusListener("c", registry, pipeline=pipeline, time_in_state=True)
        await pipeline.flush()
        assert shown(registry, "c") == "forced_open"
        assert accruing(registry, "c") == {"forced_open"}
        values = seconds(registry, "c")
    # nothing before timing began is counted: not the 50 s open, nor the 10 s half-open
    assert sum(value or 0.0 for value in values.values()) <= time.time() - started


def test_an_initial_state_shown_later_is_counted_from_then(registry):
    PrometheusListener("c", registry, initial_state=None, time_in_state=True)
    assert seconds(registry, "c") == dict.fromkeys(ALL_STATES)
    PrometheusListener("c", registry)  # initial_state="closed": the gauge now shows closed
    assert shown(registry, "c") == "closed"
    assert accruing(registry, "c") == {"closed"}


def test_a_scrape_after_the_clock_went_back_counts_from_the_new_reading():
    clock = StateClock(None, 1000.0, -1, 0)
    clock.merge(Span(1, 1000.0, "open"))  # open since t=1000
    assert clock.sample(1100.0) == {**dict.fromkeys(ALL_STATES, 0.0), "open": 100.0}
    assert clock.sample(600.0)["open"] == 100.0  # stepped back 500 s: held, never less
    assert clock.sample(700.0)["open"] == 200.0  # 100 s more since the new reading


# -- bad input, conflicts, modes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "error", "message"),
    [
        (None, TypeError, r"^Signal\.timestamp must be a number of seconds, got NoneType$"),
        ("12.5", TypeError, r"^Signal\.timestamp must be a number of seconds, got str$"),
        (True, TypeError, r"^Signal\.timestamp must be a number of seconds, got bool$"),
        (float("nan"), ValueError, r"^Signal\.timestamp must be finite, got nan$"),
        (float("-inf"), ValueError, r"^Signal\.timestamp must be finite, got -inf$"),
    ],
)
def test_a_timed_listener_rejects_a_bad_timestamp_and_queues_nothing(
    registry, timestamp, error, message
):
    listener = PrometheusListener("c", registry, time_in_state=True)
    with pytest.raises(error, match=message):
        listener(Signal(old_state="closed", new_state="open", timestamp=timestamp))
    assert shown(registry, "c") == "closed"
    listener(at("closed", "open", 10))  # an int is a number of seconds
    assert shown(registry, "c") == "open"


def test_time_in_state_must_be_a_bool(registry):
    with pytest.raises(TypeError, match=r"^time_in_state must be a bool, got int$"):
        PrometheusListener("c", registry, time_in_state=1)  # type: ignore[arg-type]  # deliberately bad


def test_a_name_clash_raises_and_leaves_no_circuit(registry):
    Gauge("circuit_breaker_state_seconds", "someone else's", registry=registry)
    with pytest.raises(ValueError, match=r"^Duplicated timeseries in CollectorRegistry"):
        PrometheusListener("c", registry, time_in_state=True)
    assert shown(registry, "c") is None
    PrometheusListener("c", registry)  # untimed still works


def test_the_collector_survives_a_reload(registry):
    PrometheusListener("c", registry, time_in_state=True)
    before = dict(vars(series))
    importlib.reload(series)
    try:
        PrometheusListener("d", registry, time_in_state=True)  # no "Duplicated timeseries"
        assert seconds(registry, "c")["closed"] is not None
        assert seconds(registry, "d")["closed"] is not None
    finally:  # the reload made new classes (CircuitLimitError...): give later tests the old ones
        vars(series).update(before)


def test_multiprocess_mode_refuses_time_in_state(tmp_path):
    assert run_multiprocess_worker("time_in_state_in_a_multiprocess_worker.py", tmp_path) == {
        "error": MULTIPROCESS_MESSAGE
    }
