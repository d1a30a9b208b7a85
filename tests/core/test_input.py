"""Hostile and odd input, refused or normalised at the call site, at every public entry point.

Every name, state, timestamp, number and registry a user hands us is checked by
``fluxgate_stream._checks`` before anything is queued or written. What is exported is exactly
the validated plain value: a ``str`` subclass's characters, fluxgate's own state string, a plain
float. A refused argument leaves every scrape of the registry working.
"""

from __future__ import annotations

import enum
import re
import tempfile
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fluxgate import CircuitBreaker
from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry, generate_latest

from fluxgate_stream import (
    HealthCollector,
    MultiProcessCollector,
    PrometheusListener,
    SignalPipeline,
    StreamingListener,
    Transitions,
    export_metrics,
    limit_circuits,
    watch,
)
from fluxgate_stream._catalogue import OWN_TRANSITIONS
from fluxgate_stream._checks import MAX_NAME_BYTES
from fluxgate_stream.asgi import lifespan, running
from fluxgate_stream.selfmetrics import PipelineMetrics

from ..support.metrics import count, samples, shown

OPEN = Signal("closed", "open", 0.0)


class Sink:
    def __init__(self) -> None:
        self.seen: list[Transitions] = []

    def write(self, transitions: Transitions) -> None:
        self.seen.append(transitions)


# -- names: one rule at every entry point -------------------------------------------------------

#: Every public entry point that takes a circuit or pipeline name, as (what it is, how to call it
#: with a name and a registry).
ENTRY_POINTS: dict[str, Callable[[Any, CollectorRegistry], object]] = {
    "PrometheusListener": PrometheusListener,
    "StreamingListener": lambda name, _: StreamingListener(name, Sink()),  # no registry
    "watch": lambda name, registry: watch(CircuitBreaker(), name, registry),
    "HealthCollector.watch": lambda name, registry: collector(registry).watch(
        CircuitBreaker(), name
    ),
    "HealthCollector.add": lambda name, registry: collector(registry).add(
        CircuitBreaker(), name, ()
    ),
    "export_metrics": lambda name, registry: export_metrics(SignalPipeline(), registry, name=name),
}


def collector(registry: CollectorRegistry) -> HealthCollector:
    found = [c for c in registry._collector_to_names if isinstance(c, HealthCollector)]
    if found:
        return found[0]
    health = HealthCollector()
    registry.register(health)
    return health


BAD_NAMES = [
    ("\ud800", r"name must be valid UTF-8 text, as Prometheus label values are: surrogates "),
    ("ok\udfff", r"name must be valid UTF-8 text, as Prometheus label values are: surrogates "),
    ("x" * (MAX_NAME_BYTES + 1), r"name must be at most 256 bytes of UTF-8, got 257 bytes: "),
    ("é" * 129, r"name must be at most 256 bytes of UTF-8, got 258 bytes: "),  # 129 characters
]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(("name", "message"), BAD_NAMES, ids=["lone", "trailing", "long", "utf8"])
def test_every_entry_point_refuses_a_bad_name_and_scrapes_still_work(
    registry, entry, name, message
):
    PrometheusListener("good", registry)(OPEN)
    with pytest.raises(ValueError, match=f"^{message}"):
        ENTRY_POINTS[entry](name, registry)
    text = generate_latest(registry)  # raises if a bad name got in
    assert b'circuit_name="good"' in text
    assert name.encode("utf-8", "replace")[:10] not in text


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_longest_name_is_accepted_everywhere(registry, entry):
    name = "é" * (MAX_NAME_BYTES // 2)  # 256 bytes of UTF-8
    handle = ENTRY_POINTS[entry](name, registry)
    assert handle is not None
    generate_latest(registry)


class Hostile(str):
    """A str subclass whose every method lies: what gets exported must be its characters."""

    __slots__ = ()

    def __str__(self) -> str:
        return "\ud800"  # a label value that would break every scrape

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return False

    def encode(self, *_: Any, **__: Any) -> bytes:  # type: ignore[override]  # lying on purpose
        return b"fine"

    def replace(self, *_: Any, **__: Any) -> str:  # type: ignore[override]  # lying on purpose
        return "\ud800"


def test_a_str_subclass_name_is_exported_as_its_characters(registry):
    listener = PrometheusListener(Hostile("payment_api"), registry)
    listener(OPEN)
    assert type(listener.name) is str
    assert shown(registry, "payment_api") == "open"
    assert count(registry, "payment_api", "closed", "open") == 1.0
    breaker = CircuitBreaker()
    watch(breaker, Hostile("payment_api"), registry)
    pipeline = SignalPipeline()  # exported while it lives
    export_metrics(pipeline, registry, name=Hostile("mine"))
    text = generate_latest(registry).decode()
    assert 'circuit_breaker_consecutive_reopens{circuit_name="payment_api"} 0.0' in text
    assert 'fluxgate_stream_buffer_size{pipeline="mine"} 1024.0' in text
    sink = Sink()
    StreamingListener(Hostile("streamed"), sink)(OPEN)
    assert type(sink.seen[0].name) is str
    assert sink.seen[0].name == "streamed"


def test_a_str_subclass_that_lies_about_its_length_in_utf8_is_measured_by_its_characters(
    registry,
):
    with pytest.raises(ValueError, match=r"^name must be valid UTF-8 text"):
        PrometheusListener(Hostile("bad\udc80"), registry)  # its encode() says b"fine"
    generate_latest(registry)


def test_an_object_that_claims_to_be_a_str_is_not_one(registry):
    class Pretender:
        __class__ = str  # type: ignore[assignment]  # isinstance(x, str) is now True

    assert isinstance(Pretender(), str)
    with pytest.raises(TypeError, match=r"^name must be a str, got Pretender$"):
        PrometheusListener(Pretender(), registry)  # type: ignore[arg-type]  # deliberately bad


# -- states: exported as fluxgate's own strings --------------------------------------------------


class St(str, enum.Enum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


@pytest.mark.anyio
@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
async def test_enum_states_are_exported_as_fluxgates_strings_on_every_path(
    anyio_backend, registry, timed
):
    assert str(St.open) == "St.open"  # what str() exports: the reason to normalise
    pipeline = SignalPipeline()
    listener = PrometheusListener(
        "enum", registry, pipeline=pipeline, initial_state=St.closed, time_in_state=timed
    )
    listener(Signal(St.closed, St.open, 1.0))  # type: ignore[arg-type]  # an (str, Enum) member
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        listener(Signal(St.open, St.half_open, 2.0))  # type: ignore[arg-type]
        await anyio.to_thread.run_sync(listener, Signal(St.half_open, St.open, 3.0))  # type: ignore[arg-type]
        listener(Signal("open", "half_open", 4.0))  # a plain one: counted with the others
        await pipeline.flush()
        tg.cancel_scope.cancel()
    assert shown(registry, "enum") == "half_open"
    assert count(registry, "enum", "closed", "open") == 1.0
    assert count(registry, "enum", "open", "half_open") == 2.0
    assert count(registry, "enum", "half_open", "open") == 1.0
    assert b"St." not in generate_latest(registry)
    assert len(samples(registry, "enum")) == 6 + len(OWN_TRANSITIONS)


def test_a_signal_subclass_and_number_subclasses_are_queued_as_plain_values(registry):
    class MySignal(Signal):
        __slots__ = ()

    class Seconds(float):
        def __float__(self) -> float:
            raise RuntimeError("never called")

        def __sub__(self, other: object) -> float:
            raise RuntimeError("never called")

    class Stamp(int):
        def __float__(self) -> float:
            raise RuntimeError("never called")

    sink = Sink()
    listener = PrometheusListener("sub", registry, initial_state=None, time_in_state=True)
    listener(MySignal("closed", "open", Stamp(100)))  # type: ignore[arg-type]
    listener(MySignal("open", "half_open", Seconds(102.5)))  # type: ignore[arg-type]
    StreamingListener("sub", sink)(MySignal("closed", "open", Seconds(1.0)))  # type: ignore[arg-type]
    assert shown(registry, "sub") == "half_open"
    value = registry.get_sample_value(
        "circuit_breaker_state_seconds_total", {"circuit_name": "sub", "state": "open"}
    )
    assert value == 2.5
    assert sink.seen[0].counts == {("closed", "open"): 1}


def test_a_str_that_only_claims_to_equal_a_state_is_refused(registry):
    class Liar(str):
        __slots__ = ()

        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash("open")

    listener = PrometheusListener("strict", registry)
    before = samples(registry)
    with pytest.raises(ValueError, match=r"^Signal\.new_state must be one of .*; got 'banana'$"):
        listener(Signal("closed", Liar("banana"), 0.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^initial_state must be one of .*; got 'banana'$"):
        PrometheusListener("strict2", registry, initial_state=Liar("banana"))  # type: ignore[arg-type]
    assert samples(registry) == before


# -- numbers: never OverflowError ----------------------------------------------------------------

HUGE = 10**400


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: SignalPipeline(batch_window=HUGE),
            ValueError,
            "batch_window must be a number of seconds a float can hold, got an int of 1329 bits",
        ),
        (
            lambda: SignalPipeline(max_buffer_size=HUGE),
            ValueError,
            "max_buffer_size must be at most 9223372036854775807 (sys.maxsize), "
            "got an int of 1329 bits",
        ),
        (
            lambda: limit_circuits(2**63, CollectorRegistry()),
            ValueError,
            "max_circuits must be at most 9223372036854775807 (sys.maxsize), "
            "got 9223372036854775808",
        ),
        (
            lambda: watch(CircuitBreaker(), "w", CollectorRegistry(), slow_thresholds=[HUGE]),
            ValueError,
            "slow_thresholds must be numbers a float can hold, got an int of 1329 bits",
        ),
        (
            lambda: SignalPipeline(max_buffer_size=-(10**5000)),
            ValueError,
            "max_buffer_size must be at least 1, got an int of 16610 bits",
        ),
        (
            lambda: SignalPipeline(batch_window=True),
            TypeError,
            "batch_window must be a number of seconds, got bool",
        ),
        (
            lambda: SignalPipeline(lone=1),  # type: ignore[arg-type]  # deliberately bad
            TypeError,
            "lone must be a bool, got int",
        ),
    ],
    ids=["window", "buffer", "cap", "threshold", "hugely-negative", "bool", "lone"],
)
def test_numbers_out_of_float_range_are_value_errors(call, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call()


@pytest.mark.anyio
async def test_a_publishing_interval_too_large_for_a_float_is_a_value_error(anyio_backend):
    metrics = PipelineMetrics(SignalPipeline(), "default", multiprocess=True)
    with pytest.raises(ValueError, match=r"^interval must be a number of seconds a float can"):
        await metrics.run(interval=HUGE)


def test_counts_of_int_subclasses_are_plain_ints(registry):
    class Size(enum.IntEnum):
        small = 8

    pipeline = SignalPipeline(max_buffer_size=Size.small)
    assert type(pipeline.max_buffer_size) is int
    assert type(pipeline.statistics().max_buffer_size) is int
    export_metrics(pipeline, registry)
    assert registry.get_sample_value("fluxgate_stream_buffer_size", {"pipeline": "default"}) == 8


# -- registries -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: PrometheusListener("a", "registry"),  # type: ignore[arg-type]
        lambda: limit_circuits(1, "registry"),  # type: ignore[arg-type]
        lambda: watch(CircuitBreaker(), "a", "registry"),  # type: ignore[arg-type]
        lambda: export_metrics(None, "registry"),  # type: ignore[arg-type]
        lambda: MultiProcessCollector("registry", path=tempfile.gettempdir()),  # type: ignore[arg-type]
    ],
    ids=["listener", "limit_circuits", "watch", "export_metrics", "MultiProcessCollector"],
)
def test_a_registry_that_is_not_one_is_a_type_error(call):
    with pytest.raises(
        TypeError,
        match=r"^registry must be a prometheus_client CollectorRegistry or None, got str$",
    ):
        call()


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        (2**70, TypeError, r"^path must be a str, an os.PathLike or None, got int$"),
        (3, TypeError, r"^path must be a str, an os.PathLike or None, got int$"),
        (b"/tmp", TypeError, r"^path must be a str, an os.PathLike or None, got bytes$"),
    ],
    ids=["huge-int", "fd-int", "bytes"],
)
def test_a_multiprocess_collector_path_that_is_not_one_is_refused(path, error, message):
    # An int is a file descriptor to os.path.isdir (an OverflowError when too large; a
    # directory's fd passes it, and the collection fails at every scrape): refused at the call.
    with pytest.raises(error, match=message):
        MultiProcessCollector(None, path=path)


def test_a_multiprocess_collector_takes_a_path_like_and_a_str_subclass(tmp_path):
    class Text(str):
        __slots__ = ()

    for path in (tmp_path, Text(str(tmp_path))):
        collector = MultiProcessCollector(None, path=path)  # type: ignore[arg-type]
        assert list(collector.collect()) == []


# -- SignalPipeline.submit(): what the consumer cannot apply is never queued ---------------------


@pytest.mark.anyio
async def test_submit_refuses_what_the_consumer_could_not_apply(anyio_backend, registry):
    pipeline = SignalPipeline()
    listener = PrometheusListener("good", registry, pipeline=pipeline)
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        with pytest.raises(TypeError, match=r"^target must be a listener's target .* got str$"):
            pipeline.submit("junk", OPEN)  # type: ignore[arg-type]  # deliberately bad
        with pytest.raises(ValueError, match=r"^Signal\.new_state must be one of"):
            pipeline.submit(listener._target, Signal("closed", "opened", 0.0))  # type: ignore[arg-type]
        pipeline.submit(listener._target, Signal(St.closed, St.open, 0.0))  # type: ignore[arg-type]
        listener(Signal("open", "half_open", 1.0))
        await pipeline.flush()
        assert pipeline.running
        tg.cancel_scope.cancel()
    assert shown(registry, "good") == "half_open"
    assert count(registry, "good", "closed", "open") == 1.0
    assert b"St." not in generate_latest(registry)


# -- the ASGI helpers and HealthCollector.add() ---------------------------------------------------


def test_the_asgi_helpers_refuse_a_pipeline_that_is_not_one_when_called():
    with pytest.raises(TypeError, match=r"^pipeline must be a SignalPipeline, got str$"):
        lifespan("pipeline")  # type: ignore[arg-type]  # deliberately bad


@pytest.mark.anyio
async def test_running_refuses_a_pipeline_that_is_not_one(anyio_backend):
    with pytest.raises(TypeError, match=r"^pipeline must be a SignalPipeline, got str$"):
        async with running("pipeline"):  # type: ignore[arg-type]  # deliberately bad
            pass


@pytest.mark.parametrize(
    ("thresholds", "error"), [(("0.5",), TypeError), ((float("nan"),), ValueError)]
)
def test_health_add_checks_its_thresholds_so_no_scrape_breaks(registry, thresholds, error):
    breaker = CircuitBreaker()
    with pytest.raises(error, match=r"^slow_thresholds must"):
        collector(registry).add(breaker, "api", thresholds)
    generate_latest(registry)
    collector(registry).add(breaker, "api", (2.0, 0.5, 2.0))
    text = generate_latest(registry).decode()
    assert text.index('threshold_seconds="0.5"') < text.index('threshold_seconds="2.0"')


def test_pipeline_metrics_made_by_hand_follow_the_name_rule():
    with pytest.raises(ValueError, match=r"^name must be valid UTF-8 text"):
        PipelineMetrics(SignalPipeline(), "\ud800", multiprocess=True)
    with pytest.raises(TypeError, match=r"^pipeline must be a SignalPipeline, got str$"):
        PipelineMetrics("pipeline", "default", multiprocess=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^multiprocess must be a bool, got int$"):
        PipelineMetrics(SignalPipeline(), "default", multiprocess=1)  # type: ignore[arg-type]
    assert type(PipelineMetrics(SignalPipeline(), Hostile("mine"), multiprocess=False).name) is str
