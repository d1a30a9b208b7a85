"""The live demo's application: real breakers in front of simulated dependencies, over HTTP.

``python -m fluxgate_stream demo`` (or ``fluxgate-stream demo``, or ``make demo``) runs five
circuits: three async breakers driven by tasks on the event loop and two sync ``CircuitBreaker``
instances driven from worker threads (so their signals cross the thread bridge). Each
guards a simulated dependency that fails, slows down and recovers on a repeating schedule; one is
also steered by an "operator" through ``force_open()``, ``metrics_only()``, ``disable()`` and
``reset()``, so all six fluxgate states appear.

The metrics live in a dedicated ``CollectorRegistry`` (the demo touches no global metric state),
served by ``prometheus_client``'s HTTP server on ``host:port``. Every breaker has a
``PrometheusListener`` and is metered with ``meter_calls()``. A rich table shows every circuit's
state, transition counts, calls per second, rejections per second and p95 call latency, read back
from that registry. On stop (``--duration`` elapsed, Ctrl-C or SIGTERM) the breakers finish their
calls, the consumer applies everything queued, the final frame is checked against what the
breakers themselves reported and the calls the demo made, and the meters are closed.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO, TypeVar

import anyio
import anyio.to_thread
from fluxgate import AsyncCircuitBreaker, CallNotPermittedError, CircuitBreaker
from fluxgate.permits import All as PermitAll
from fluxgate.retries import Cooldown
from fluxgate.trippers import FailureRate, MinRequests, SlowRate, Tripper
from fluxgate.windows import CountWindow
from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console
from rich.live import Live

from fluxgate_stream import AnyioCircuitBreaker, PrometheusListener, SignalPipeline, meter_calls
from fluxgate_stream.demo._report import (
    RATE_WINDOW,
    Backend,
    CircuitReport,
    DemoReport,
    Exported,
    RunsOn,
    call_rates,
    read_exported,
)
from fluxgate_stream.demo._view import WIDE, render_frame

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fluxgate.circuitbreaker import CircuitBreakerInfo
    from fluxgate.signal import Signal
    from fluxgate.state import State

    from fluxgate_stream import CallMeter

__all__ = [
    "CALL_BUCKETS",
    "SCENARIOS",
    "CircuitReport",
    "DemoConfig",
    "DemoReport",
    "DependencyError",
    "Exported",
    "Phase",
    "Scenario",
    "make_console",
    "metrics_url",
    "read_exported",
    "run_demo",
]


@dataclass(frozen=True)
class Phase:
    """One stretch of a dependency's schedule.

    Attributes:
        name: what the view shows for the dependency (``healthy``, ``outage``, ...).
        seconds: how long it lasts, in schedule seconds (see ``DemoConfig.speed``).
        error_rate: the fraction of calls that fail, spread evenly (deterministic).
        latency: how long each call takes, in real seconds.
        operator: if set, an operator moves the breaker to this state when the phase begins.
    """

    name: str
    seconds: float
    error_rate: float = 0.0
    latency: float = 0.002
    operator: State | None = None


@dataclass(frozen=True)
class Scenario:
    """A circuit of the demo: its name, how its breaker runs, and its dependency's schedule.

    Attributes:
        name: the ``circuit_name`` label.
        runs_on: ``"task"`` for an async breaker on the event loop, ``"thread"`` for a sync
            ``CircuitBreaker`` called from worker threads.
        phases: the schedule, repeated for as long as the demo runs.
        slow_threshold: if set, calls slower than this many seconds count towards tripping.
    """

    name: str
    runs_on: RunsOn
    phases: tuple[Phase, ...]
    slow_threshold: float | None = None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "payments",
        "task",
        (Phase("healthy", 6), Phase("outage", 8, error_rate=0.9), Phase("healthy", 10)),
    ),
    Scenario(
        "inventory",
        "task",
        (
            Phase("healthy", 4),
            Phase("slow", 8, error_rate=0.1, latency=0.08),
            Phase("healthy", 8),
        ),
        slow_threshold=0.05,
    ),
    Scenario(
        "search",
        "thread",
        (
            Phase("healthy", 9),
            Phase("outage", 6, error_rate=1.0),
            Phase("degraded", 5, error_rate=0.4),
            Phase("healthy", 6),
        ),
    ),
    Scenario(
        "recommendations",
        "thread",
        (
            Phase("flaky", 7, error_rate=0.35),
            Phase("outage", 5, error_rate=0.8),
            Phase("healthy", 6),
        ),
    ),
    Scenario(
        "ledger",
        "task",
        (
            Phase("healthy", 5, operator="closed"),
            Phase("maintenance", 4, operator="forced_open"),
            Phase("shadowing", 4, error_rate=0.6, operator="metrics_only"),
            Phase("bypassed", 3, operator="disabled"),
        ),
    ),
)


#: The bucket bounds of the demo's call-duration histogram, in seconds: finer than the library's
#: default (5 ms and up) around the simulated dependencies' 2 ms and 80 ms, so that the p95 the
#: view interpolates from them, as Prometheus's ``histogram_quantile()`` would, is close to the
#: real one.
CALL_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
)


@dataclass(frozen=True)
class DemoConfig:
    """How to run the demo.

    Attributes:
        host: the address the metrics server binds to.
        port: its port; 0 picks a free one (the URL printed at start names it).
        backend: the anyio backend, ``"asyncio"`` or ``"trio"``.
        duration: stop after this many real seconds; ``None`` runs until Ctrl-C or SIGTERM.
        speed: how many schedule seconds pass per real second (10 plays a 30 s schedule in 3 s).
            Breaker cool-downs follow the schedule; call latencies stay real.
        interval: real seconds between two calls of one circuit.
        refresh: real seconds between two frames of the live view.
        scenarios: the circuits to run.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    backend: Backend = "asyncio"
    duration: float | None = None
    speed: float = 1.0
    interval: float = 0.02
    refresh: float = 0.25
    scenarios: tuple[Scenario, ...] = SCENARIOS

    def __post_init__(self) -> None:
        """Check the settings.

        Raises:
            ValueError: ``port`` is outside 0-65535, ``backend`` is unknown, or ``duration``,
                ``speed``, ``interval`` or ``refresh`` is not a positive finite number, or
                ``scenarios`` is empty or repeats a name.
        """
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0-65535, got {self.port}")
        if self.backend not in ("asyncio", "trio"):
            raise ValueError(f"backend must be 'asyncio' or 'trio', got {self.backend!r}")
        for what, value in (
            ("duration", self.duration),
            ("speed", self.speed),
            ("interval", self.interval),
            ("refresh", self.refresh),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{what} must be a positive number of seconds, got {value}")
        names = [scenario.name for scenario in self.scenarios]
        if not names or len(set(names)) != len(names):
            raise ValueError("scenarios must be non-empty, with distinct names")


class DependencyError(ConnectionError):
    """What a simulated dependency raises when it fails."""


# -- the circuits -----------------------------------------------------------------------------


_Breaker = TypeVar("_Breaker")


class _AsyncBreaker(Protocol):
    """What the demo needs of an async breaker: fluxgate's, or one that also runs on trio."""

    async def call(self, func: Callable[[], Awaitable[None]], /) -> None: ...
    async def reset(self) -> None: ...
    async def force_open(self) -> None: ...
    async def metrics_only(self) -> None: ...
    async def disable(self) -> None: ...
    def info(self) -> CircuitBreakerInfo: ...


def _async_breaker_class(backend: Backend) -> Callable[..., _AsyncBreaker]:
    """The async breaker for ``backend``.

    fluxgate's own ``AsyncCircuitBreaker`` on asyncio, what users run. It is built on asyncio
    primitives and fails under trio, so trio gets ``AnyioCircuitBreaker``, its anyio port.
    """
    return AsyncCircuitBreaker if backend == "asyncio" else AnyioCircuitBreaker


class _Witness:
    """A plain listener next to ours: what the breaker itself reported, to check the export."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transitions: Counter[tuple[State, State]] = Counter()

    def __call__(self, signal: Signal, /) -> None:
        with self._lock:
            self._transitions[signal.old_state, signal.new_state] += 1

    def transitions(self) -> dict[tuple[State, State], int]:
        with self._lock:
            return dict(self._transitions)


@dataclass
class _Calls:
    ok: int = 0
    failed: int = 0
    rejected: int = 0


class _Clock:
    """Schedule time: real time since start, times ``speed``."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def now(self) -> float:
        return self.elapsed() * self.speed


class _OnTask:
    """An async breaker, called from its circuit's task on the event loop."""

    def __init__(self, breaker: _AsyncBreaker) -> None:
        self.breaker = breaker

    async def call(self, latency: float, *, fail: bool) -> None:
        async def dependency() -> None:
            await anyio.sleep(latency)
            if fail:
                raise DependencyError("dependency failed")

        await self.breaker.call(dependency)

    async def command(self, target: State) -> None:
        commands = {
            "closed": self.breaker.reset,
            "forced_open": self.breaker.force_open,
            "metrics_only": self.breaker.metrics_only,
            "disabled": self.breaker.disable,
        }
        await commands[target]()


class _OnThread:
    """A sync ``CircuitBreaker``, called from worker threads (one call at a time)."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    async def call(self, latency: float, *, fail: bool) -> None:
        def blocking_call() -> None:
            self.breaker.call(_blocking_dependency, latency, fail)

        await anyio.to_thread.run_sync(blocking_call)

    async def command(self, target: State) -> None:
        commands = {
            "closed": self.breaker.reset,
            "forced_open": self.breaker.force_open,
            "metrics_only": self.breaker.metrics_only,
            "disabled": self.breaker.disable,
        }
        await anyio.to_thread.run_sync(commands[target])


class _Circuit:
    """One breaker, its dependency, and the task that drives it."""

    def __init__(
        self,
        scenario: Scenario,
        registry: CollectorRegistry,
        pipeline: SignalPipeline,
        clock: _Clock,
        async_breaker: Callable[..., _AsyncBreaker],
    ) -> None:
        self.scenario = scenario
        self.runs_on: RunsOn = scenario.runs_on
        self.clock = clock
        self.witness = _Witness()
        self.calls = _Calls()
        self.phase = scenario.phases[0]
        self._step: tuple[int, int] | None = None  # (cycle, index) of the current phase
        self._debt = 0.0  # spreads failures evenly: one per unit of accumulated error rate
        self._cycle = math.fsum(phase.seconds for phase in scenario.phases)
        tripper: Tripper = FailureRate(0.5)
        if scenario.slow_threshold is not None:
            tripper = tripper | SlowRate(0.5, threshold=scenario.slow_threshold)
        tripper = MinRequests(5) & tripper
        cooldown = Cooldown(3.0 / clock.speed)  # 3 schedule seconds
        listener = PrometheusListener(
            scenario.name, registry, pipeline=pipeline, time_in_state=True
        )
        listeners = (listener, self.witness)

        def build(kind: Callable[..., _Breaker]) -> _Breaker:
            """The circuit's breaker: the same settings, sync or async."""
            return kind(
                window=CountWindow(10),
                tripper=tripper,
                retry=cooldown,
                permit=PermitAll(),
                listeners=listeners,
            )

        self._breaker: _OnTask | _OnThread
        metered: object
        if scenario.runs_on == "task":
            breaker = build(async_breaker)
            self._breaker = _OnTask(breaker)
            self._info = breaker.info
            metered = breaker
        else:
            sync_breaker = build(CircuitBreaker)
            self._breaker = _OnThread(sync_breaker)
            self._info = sync_breaker.info
            metered = sync_breaker
        #: Every call counted by kind and timed, on the same pipeline as the transitions.
        self.meter: CallMeter = meter_calls(
            metered, scenario.name, registry, pipeline=pipeline, buckets=CALL_BUCKETS
        )

    @property
    def name(self) -> str:
        return self.scenario.name

    def state(self) -> State:
        """The breaker's own state (not the exported one)."""
        return self._info().state

    def _advance(self) -> Phase | None:
        """Update ``phase``; return it if it just began, else ``None``."""
        cycle, into = divmod(self.clock.now(), self._cycle)
        phases = self.scenario.phases
        index = 0
        while index < len(phases) - 1 and into >= phases[index].seconds:
            into -= phases[index].seconds
            index += 1
        step = (int(cycle), index)
        self.phase = phase = phases[index]
        if step == self._step:
            return None
        self._step = step
        return phase

    def _fails(self) -> bool:
        self._debt += self.phase.error_rate
        if self._debt >= 1.0:
            self._debt -= 1.0
            return True
        return False

    async def drive(self, interval: float, stopping: anyio.Event) -> None:
        """Call the dependency through the breaker every ``interval`` seconds until ``stopping``.

        The loop is left between calls, never by cancelling one: fluxgate's
        ``AsyncCircuitBreaker`` notifies its listeners through ``asyncio.gather``, so a call
        cancelled right after a transition would change the breaker's state without telling any
        listener, and the export could not match.
        """
        while not stopping.is_set():
            begun = self._advance()
            if begun is not None and begun.operator not in (None, self.state()):
                await self._breaker.command(begun.operator)
            try:
                await self._breaker.call(self.phase.latency, fail=self._fails())
            except CallNotPermittedError:
                self.calls.rejected += 1
            except DependencyError:
                self.calls.failed += 1
            else:
                self.calls.ok += 1
            with anyio.move_on_after(interval):
                await stopping.wait()


def _blocking_dependency(latency: float, fail: bool) -> None:  # noqa: FBT001  # positional for run_sync
    time.sleep(latency)
    if fail:
        raise DependencyError("dependency failed")


def _arrow(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


class _Frames:
    """Builds reports of the running demo from its circuits and its registry.

    Call rates and the p95 come from differences between two reads of the registry: the
    counters' and the histogram buckets' growth since the read about ``RATE_WINDOW`` seconds
    ago. Each report keeps its read; the oldest are let go once a newer one is that old. The p95
    is ``histogram_quantile(0.95, ...)`` of the buckets' growth (``_report``), as a
    ``histogram_quantile(0.95, rate(..._bucket[3s]))`` query would show it.
    """

    def __init__(
        self, config: DemoConfig, registry: CollectorRegistry, url: str, circuits: list[_Circuit]
    ) -> None:
        self.config = config
        self.registry = registry
        self.url = url
        self.circuits = circuits
        self.clock = circuits[0].clock
        self._reads: deque[tuple[float, dict[str, Exported]]] = deque()
        self._reads.append((self.clock.elapsed(), read_exported(registry)))

    def _read(self) -> tuple[dict[str, Exported], dict[str, Exported], float]:
        """(the registry now, the read to compare it with, the seconds between them)."""
        now = self.clock.elapsed()
        exported = read_exported(self.registry)
        reads = self._reads
        reads.append((now, exported))
        while len(reads) > 2 and now - reads[1][0] >= RATE_WINDOW:
            reads.popleft()
        then, earlier = reads[0]
        return exported, earlier, now - then

    def report(self, stopped_by: str | None = None) -> DemoReport:
        exported, earlier, span = self._read()
        reports: list[CircuitReport] = []
        for circuit in self.circuits:
            seen = exported.get(circuit.name, Exported())
            before = earlier.get(circuit.name, Exported())
            reports.append(
                CircuitReport(
                    name=circuit.name,
                    runs_on=circuit.runs_on,
                    phase=circuit.phase.name,
                    state=circuit.state(),
                    exported_state=seen.state,
                    transitions={
                        _arrow(pair): n for pair, n in sorted(circuit.witness.transitions().items())
                    },
                    exported_transitions={
                        _arrow(pair): n for pair, n in sorted(seen.transitions.items()) if n
                    },
                    calls={
                        "ok": circuit.calls.ok,
                        "failed": circuit.calls.failed,
                        "rejected": circuit.calls.rejected,
                    },
                    exported_seconds=dict(seen.seconds),
                    exported_calls=dict(seen.calls),
                    rates=call_rates(before, seen, span),
                )
            )
        return DemoReport(
            url=self.url,
            backend=self.config.backend,
            elapsed=self.clock.elapsed(),
            speed=self.config.speed,
            circuits=tuple(reports),
            stopped_by=stopped_by,
            rate_window=span,
        )


# -- running it -------------------------------------------------------------------------------


def metrics_url(host: str, port: int) -> str:
    """The URL of the metrics endpoint on ``host:port``.

    Example:
        >>> metrics_url("::1", 8000)
        'http://[::1]:8000/metrics'
    """
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


def make_console(*, stderr: bool = False) -> Console:
    """A rich console for the view on stdout (or stderr); ``WIDE`` columns when not a terminal.

    Without a terminal rich would otherwise wrap the table at 80 columns (``COLUMNS`` still wins).
    """
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=WIDE)
    return console


class _Stop:
    """Why the demo stopped; set by whichever of the stoppers fires first."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.event = anyio.Event()

    def fire(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()


async def _stop_on_signals(stop: _Stop) -> None:
    """Stop on SIGINT or SIGTERM; only the main thread can receive signals."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        with receiver as signals:
            async for signum in signals:
                stop.fire(signal.Signals(signum).name)
                return
    except NotImplementedError:  # pragma: no cover  # asyncio on Windows: Ctrl-C raises instead
        return


async def _stop_after(duration: float, stop: _Stop) -> None:
    await anyio.sleep(duration)
    stop.fire("duration")


async def _demo(
    config: DemoConfig,
    registry: CollectorRegistry,
    url: str,
    live: Live,
    ready: Callable[[], None],
) -> DemoReport:
    pipeline = SignalPipeline()
    clock = _Clock(config.speed)
    async_breaker = _async_breaker_class(config.backend)
    circuits = [
        _Circuit(scenario, registry, pipeline, clock, async_breaker)
        for scenario in config.scenarios
    ]
    # The meters are closed after the final frame is read: close() drops the calls' series.
    with contextlib.ExitStack() as meters:
        for circuit in circuits:
            meters.enter_context(circuit.meter)
        frames = _Frames(config, registry, url, circuits)
        ready()  # every circuit is exported from here on

        stop = _Stop()
        async with anyio.create_task_group() as consumer:
            await consumer.start(pipeline.run)
            async with anyio.create_task_group() as stoppers:
                stoppers.start_soon(_stop_on_signals, stop)
                if config.duration is not None:
                    stoppers.start_soon(_stop_after, config.duration, stop)
                async with anyio.create_task_group() as drivers:
                    for circuit in circuits:
                        drivers.start_soon(circuit.drive, config.interval, stop.event)
                    while not stop.event.is_set():
                        live.update(
                            render_frame(frames.report(), width=live.console.width), refresh=True
                        )
                        with anyio.move_on_after(config.refresh):
                            await stop.event.wait()
                stoppers.cancel_scope.cancel()
            # Every breaker call has returned (drivers finish their call, worker threads
            # included), so stopping the consumer applies every signal and call they sent.
            consumer.cancel_scope.cancel()
        report = frames.report(stop.reason)
        live.update(render_frame(report, width=live.console.width), refresh=True)
        return report


def run_demo(
    config: DemoConfig,
    *,
    console: Console | None = None,
    json_out: TextIO | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run the demo until ``config.duration`` elapses, or Ctrl-C / SIGTERM; return an exit code.

    Args:
        config: what to run and where to serve the metrics.
        console: where the live view goes (``make_console()`` if ``None``). Without a terminal,
            rich prints only the final frame.
        json_out: if given, the final report is written there as one line of JSON.
        on_ready: called with the metrics URL once it serves every circuit, before any breaker
            runs.

    Returns:
        0 when the final export matches every breaker exactly; 1 otherwise (never expected).

    Raises:
        OSError: the metrics server cannot bind ``config.host:config.port``.
    """
    console = console or make_console()
    registry = CollectorRegistry()
    server, thread = start_http_server(config.port, addr=config.host, registry=registry)
    try:
        url = metrics_url(config.host, server.server_port)

        def ready() -> None:
            console.print(f"Serving metrics on [bold]{url}[/bold]  (Ctrl-C to stop)")
            if on_ready is not None:
                on_ready(url)

        with Live(console=console, auto_refresh=False) as live:
            report = anyio.run(_demo, config, registry, url, live, ready, backend=config.backend)
        if not console.is_terminal:
            console.line()  # rich ends a terminal's last frame with a newline, not a file's
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    transitions = sum(sum(circuit.transitions.values()) for circuit in report.circuits)
    calls = sum(sum(circuit.calls.values()) for circuit in report.circuits)
    if report.matches:
        console.print(
            f"Stopped by {report.stopped_by} after {report.elapsed:.1f} s. Flushed: all "
            f"{transitions} transitions and {calls} calls of {len(report.circuits)} circuits are "
            "exported, and every exported state matches its breaker."
        )
    else:
        console.print("[bold red]The exported metrics do not match the breakers.[/bold red]")
    if json_out is not None:
        json_out.write(report.to_json() + "\n")
        json_out.flush()
    return 0 if report.matches else 1
