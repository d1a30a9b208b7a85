"""Runs every section on every backend and writes the Markdown report."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench import breakers, drain, lag, memory, producer, scrape
from bench.config import FULL, QUICK, Config
from bench.harness import (
    fmt_bytes,
    fmt_ns,
    fmt_rate,
    fmt_ratio,
    machine_lines,
    median,
    ratio,
    table,
)

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "report.md"

#: Companion benchmarks, each a module with ``run(quick) -> str`` returning a Markdown table:
#: an anyio circuit breaker's per-call overhead, the health collector's scrape cost, and what
#: time in state costs.
BREAKER_BENCH_MODULE = "bench.bench_breaker"
HEALTH_BENCH_MODULE = "bench.bench_health"
TIME_IN_STATE_BENCH_MODULE = "bench.bench_time_in_state"

#: Targets from the issue (medians, ratios vs upstream in the same run).
LOOP_RATIO_TARGET = 50.0
LOOP_P99_TARGET_NS = 2_000.0
THREAD_RATIO_TARGET = 30.0
DRAIN_RATIO_TARGET = 20.0
SCALING_TOLERANCE = 0.20
MEMORY_GROWTH_LIMIT = 1.5  # peak(big) / peak(small): "bounded" means no growth with the count


@dataclass(frozen=True)
class Backend:
    """An event loop to run on: anyio backend name and options."""

    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


def available_backends() -> list[Backend]:
    """asyncio always; trio and uvloop where installed."""
    found = [Backend("asyncio", "asyncio")]
    if importlib.util.find_spec("trio") is not None:
        found.append(Backend("trio", "trio"))
    if importlib.util.find_spec("uvloop") is not None and sys.platform != "win32":
        found.append(Backend("uvloop", "asyncio", {"use_uvloop": True}))
    return found


@dataclass
class BackendResults:
    """Everything measured on one backend."""

    producer: dict[str, producer.ProducerResult] = field(default_factory=dict)
    scaling: dict[int, producer.ProducerResult] = field(default_factory=dict)
    drains: list[tuple[str, drain.DrainResult]] = field(default_factory=list)
    upstream_drain: dict[int, drain.DrainResult] = field(default_factory=dict)
    scaling_drain: dict[int, drain.DrainResult] = field(default_factory=dict)
    lag: dict[str, lag.LagResult] = field(default_factory=dict)
    memory: list[memory.MemoryResult] = field(default_factory=list)
    async_flips: breakers.FlipCosts | None = None
    sync_flips: breakers.FlipCosts | None = None


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def run_backend(cfg: Config, backend: Backend) -> BackendResults:
    """Every per-backend section, in order."""
    out = BackendResults()
    tag = backend.label
    n = cfg.circuits
    _progress(f"{tag}: 1. producer cost")
    out.scaling = await producer.loop_thread(cfg, sorted({*cfg.scaling, n}))
    out.producer["a"] = out.scaling[n]
    if n not in cfg.scaling:
        del out.scaling[n]
    out.producer["a_full"] = await producer.loop_thread_full(cfg, n)
    out.producer["b"] = await producer.worker_thread(cfg, n)
    out.producer["b_full"] = await producer.worker_thread_full(cfg, n)
    out.producer["c"] = await producer.sync_fallback(cfg, n)

    _progress(f"{tag}: 2. drain")
    signals, repeats = cfg.drain_signals, cfg.drain_repeats
    for circuits in cfg.scaling:
        out.upstream_drain[circuits] = drain.upstream_direct(signals, circuits)
        out.scaling_drain[circuits] = await drain.loop_backlog(
            signals, circuits, cfg.big_buffer, repeats
        )
    out.drains.append(
        (
            "loop thread",
            out.scaling_drain.get(n)
            or await drain.loop_backlog(signals, n, cfg.big_buffer, repeats),
        )
    )
    out.drains.append(("loop thread", await drain.loop_backlog(signals, n, 1024, repeats)))
    out.drains.append(
        ("2 threads", await drain.thread_backlog(signals, n, cfg.big_buffer, repeats))
    )
    out.drains.append(("2 threads", await drain.thread_backlog(signals, n, 1024, repeats)))

    _progress(f"{tag}: 3. lag")
    out.lag["loop thread"] = await lag.loop_steady(cfg.lag_rate, cfg.lag_seconds, n)
    out.lag["worker thread"] = await lag.thread_steady(cfg.lag_rate, cfg.lag_seconds, n)
    out.lag["upstream"] = lag.upstream_steady(cfg.lag_rate, cfg.lag_seconds, n)

    _progress(f"{tag}: 5. memory")
    for size in cfg.memory_sizes:
        out.memory.append(await memory.storm(size, cfg.memory_threads))

    _progress(f"{tag}: 6. breakers")
    out.async_flips = await breakers.async_breaker(backend.label, cfg.flips)
    out.sync_flips = await breakers.sync_breaker(cfg.flips)
    return out


# -- the report ----------------------------------------------------------------------------------


def _mark(*, ok: bool) -> str:
    return "met" if ok else "**missed**"


def _loop_ratio(r: producer.ProducerResult) -> float:
    return ratio(r.upstream.median, r.ours.median)


def _scaling_spread(res: BackendResults) -> float:
    """Largest relative deviation of the per-signal producer median from the 1-circuit figure."""
    base = res.scaling[min(res.scaling)].ours.median
    return max(abs(r.ours.median - base) / base for r in res.scaling.values())


def _net_cost(r: producer.ProducerResult) -> float:
    """Batched per-signal cost beyond the no-op per-circuit listener's, in the same rounds."""
    trivial = r.trivial.mean_batched if r.trivial else float("nan")
    return r.ours.mean_batched - trivial


def _net_scaling_spread(res: BackendResults) -> float:
    """As ``_scaling_spread``, for ``_net_cost``: what our code adds, net of reaching a circuit."""
    base = _net_cost(res.scaling[min(res.scaling)])
    return max(abs(_net_cost(r) - base) / base for r in res.scaling.values())


def _memory_growth(res: BackendResults) -> float:
    small, big = res.memory[0], res.memory[-1]
    return ratio(big.peak, small.peak)


def _drain_ratio(res: BackendResults, index: int) -> float:
    result = res.drains[index][1]
    return ratio(result.rate, _upstream_rate(res, result.circuits))


def _upstream_rate(res: BackendResults, circuits: int) -> float:
    return res.upstream_drain[circuits].rate


def targets_section(cfg: Config, results: dict[str, BackendResults]) -> str:
    labels = list(results)
    rows: list[list[str]] = []

    def row(name: str, cell: Callable[[BackendResults], str]) -> None:
        rows.append([name, *(cell(results[label]) for label in labels)])

    def loop_cell(res: BackendResults) -> str:
        value = _loop_ratio(res.producer["a"])
        return f"{fmt_ratio(value)} {_mark(ok=value >= LOOP_RATIO_TARGET)}"

    def loop_p99_cell(res: BackendResults) -> str:
        value = res.producer["a"].ours.p99
        return f"{fmt_ns(value)} {_mark(ok=value < LOOP_P99_TARGET_NS)}"

    def thread_cell(res: BackendResults) -> str:
        value = ratio(res.producer["b"].upstream.median, res.producer["b"].ours.median)
        return f"{fmt_ratio(value)} {_mark(ok=value >= THREAD_RATIO_TARGET)}"

    def drain_cell(index: int) -> Callable[[BackendResults], str]:
        def cell(res: BackendResults) -> str:
            value = _drain_ratio(res, index)
            return f"{fmt_ratio(value)} {_mark(ok=value >= DRAIN_RATIO_TARGET)}"

        return cell

    def scaling_cell(res: BackendResults) -> str:
        value = _scaling_spread(res)
        return f"±{value:.0%} {_mark(ok=value <= SCALING_TOLERANCE)}"

    def net_scaling_cell(res: BackendResults) -> str:
        value = _net_scaling_spread(res)
        return f"±{value:.0%} {_mark(ok=value <= SCALING_TOLERANCE)}"

    def memory_cell(res: BackendResults) -> str:
        value = _memory_growth(res)
        return f"{value:.2f}x {_mark(ok=value <= MEMORY_GROWTH_LIMIT)}"

    def floor_cell(res: BackendResults) -> str:
        r = res.producer["a"]
        return fmt_ratio(ratio(r.ours.mean_batched, r.floor.mean_batched))

    big = cfg.big_buffer
    row(
        f"loop-thread producer >= {LOOP_RATIO_TARGET:.0f}x cheaper than upstream (median)",
        loop_cell,
    )
    row("loop-thread producer p99 < 2 µs", loop_p99_cell)
    row(f"worker-thread producer >= {THREAD_RATIO_TARGET:.0f}x cheaper (median)", thread_cell)
    row(
        f"drain >= {DRAIN_RATIO_TARGET:.0f}x upstream's apply rate (loop backlog, buffer {big})",
        drain_cell(0),
    )
    row(f"drain >= {DRAIN_RATIO_TARGET:.0f}x (loop backlog, buffer 1024 + ledger)", drain_cell(1))
    row(f"drain >= {DRAIN_RATIO_TARGET:.0f}x (2-thread backlog, buffer {big})", drain_cell(2))
    row(
        f"drain >= {DRAIN_RATIO_TARGET:.0f}x (2-thread backlog, buffer 1024 + ledger)",
        drain_cell(3),
    )
    circuits = ", ".join(f"{c:,}" for c in cfg.scaling)
    row(f"producer cost within ±20% over {circuits} circuits (per-call median)", scaling_cell)
    row(
        "the same, net of the no-op per-circuit listener (ours - no-op, batched; see section 4)",
        net_scaling_cell,
    )
    sizes = " vs ".join(f"{s:,}" for s in cfg.memory_sizes)
    row(f"memory bounded: peak({sizes} signals) ratio <= {MEMORY_GROWTH_LIMIT}", memory_cell)
    row("(info) loop-thread producer / deque.append floor (batched)", floor_cell)
    return "## Targets\n\n" + table(["Target", *labels], rows)


_PATHS = {
    "a": "(a) loop thread, consumer running",
    "a_full": "(a') loop thread, stream full: overflow ledger",
    "b": "(b) worker thread, consumer running",
    "b_full": "(b') worker thread, bridge full: overflow ledger",
    "c": "(c) sync fallback, no consumer",
}


def producer_section(cfg: Config, results: dict[str, BackendResults]) -> str:
    rows: list[list[str]] = []
    for label, res in results.items():
        for key, title in _PATHS.items():
            r = res.producer[key]
            rows.append(
                [
                    label,
                    title,
                    fmt_ns(r.upstream.median),
                    fmt_ns(r.upstream.p99),
                    fmt_ns(r.ours.median),
                    fmt_ns(r.ours.p99),
                    fmt_ratio(ratio(r.upstream.median, r.ours.median)),
                    fmt_ns(r.ours.mean_batched),
                    fmt_ns(r.floor.mean_batched),
                    fmt_ratio(ratio(r.ours.mean_batched, r.floor.mean_batched)),
                    r.check,
                ]
            )
    headers = [
        "Backend",
        "Path",
        "upstream median",
        "upstream p99",
        "ours median",
        "ours p99",
        "upstream / ours",
        "ours batched",
        "floor (deque.append)",
        "ours / floor",
        "metrics after",
    ]
    return (
        "## 1. Producer cost per signal\n\n"
        f"What a breaker pays per transition: one listener call, {cfg.circuits} circuits, "
        f"default `max_buffer_size=1024`. {cfg.rounds} rounds (after {cfg.warmup} warm-up "
        f"rounds) of {cfg.burst} calls timed one by one plus {cfg.burst} timed as a batch, "
        "upstream, ours and the floor alternating. In (a) and (b) the consumer gets `flush()` "
        "between bursts, so each burst's first call finds it asleep and pays the wake-up. "
        "In (a') and (b') the buffer is filled (untimed) first, so every timed call folds into "
        "the overflow ledger; in (b') the loop is blocked joining the thread. "
        "*Metrics after* checks every counter and gauge against what was sent.\n\n"
        + table(headers, rows)
    )


def drain_section(cfg: Config, results: dict[str, BackendResults]) -> str:
    rows: list[list[str]] = []
    for label, res in results.items():
        for how, r in res.drains:
            up = res.upstream_drain[r.circuits]
            total_ours = r.produce_ns + r.drain_ns
            rows.append(
                [
                    label,
                    how,
                    f"{r.buffer:,}",
                    fmt_ns(r.produce_ns / r.signals),
                    fmt_ns(r.drain_ns),
                    fmt_rate(r.rate),
                    fmt_rate(up.rate),
                    fmt_ratio(ratio(r.rate, up.rate)),
                    fmt_ratio(ratio(up.drain_ns, total_ours)),
                    _paths(r.stats),
                    r.check,
                ]
            )
    headers = [
        "Backend",
        "Queued by",
        "max_buffer_size",
        "produce / signal",
        "drain (to flush())",
        "drain rate",
        "upstream direct rate",
        "drain / upstream",
        "upstream / (produce + drain)",
        "paths taken",
        "metrics after",
    ]
    return (
        "## 2. Consumer drain rate\n\n"
        f"{cfg.drain_signals:,} signals across {cfg.circuits} circuits queued while the "
        "consumer runs but cannot get the loop (the loop thread produces without awaiting, or "
        "two threads produce while the loop thread blocks joining them), then timed until "
        "`flush()` returns; median of "
        f"{cfg.drain_repeats}. Upstream applies the same signals directly, one call each. "
        "Production ends with a full `gc.collect()`, counted in *produce / signal*: the "
        "backlog's long-lived items make CPython's collector due for a full collection, which "
        "otherwise lands at random in either phase and then decides the drain's time. "
        "With the default buffer, what does not fit goes through the overflow ledger, which "
        "coalesces at the producer: its drain is short because the producers already paid. "
        "*upstream / (produce + drain)* compares the total work.\n\n" + table(headers, rows)
    )


def _paths(stats: dict[str, int] | None) -> str:
    if stats is None:
        return "n/a"
    keys = ("stream", "bridge", "overflow", "wakeups", "batches")
    return ", ".join(f"{k} {stats[k]:,}" for k in keys if k in stats)


def lag_section(cfg: Config, results: dict[str, BackendResults]) -> str:
    rows: list[list[str]] = []
    for label, res in results.items():
        for name, r in res.lag.items():
            lag50, lag99, prod50, prod99 = lag.summary(r)
            who = "upstream (its call)" if name == "upstream" else f"ours, {name}"
            rows.append(
                [
                    label,
                    who,
                    f"{r.sent:,} / {r.applied:,}",
                    fmt_ns(lag50),
                    fmt_ns(lag99),
                    fmt_ns(prod50),
                    fmt_ns(prod99),
                ]
            )
    headers = [
        "Backend",
        "Producer",
        "sent / applied",
        "lag p50",
        "lag p99",
        "producer p50",
        "producer p99",
    ]
    return (
        "## 3. End-to-end lag under a steady load\n\n"
        f"{cfg.lag_rate:,} signals/s for {cfg.lag_seconds:g} s over {cfg.circuits} circuits, "
        "paced in small bursts (every 0.2 ms), from a task on the loop thread or from a worker "
        "thread while the loop idles. Lag is from just before the listener call to the moment "
        "the consumer's counter increment for that signal returns (a Counter subclass "
        "pre-registered in the registry timestamps each increment; fluxgate-stream reuses it). "
        "Upstream applies inside the call, so its lag is its call time.\n\n" + table(headers, rows)
    )


def scaling_section(
    cfg: Config, results: dict[str, BackendResults], scraped: scrape.ScrapeResult
) -> str:
    rows: list[list[str]] = []
    for label, res in results.items():
        first = res.scaling[min(res.scaling)]
        base = first.ours.median
        base_batched = first.ours.mean_batched
        trivial_base = first.trivial.mean_batched if first.trivial else float("nan")
        net_base = _net_cost(first)
        for circuits, r in sorted(res.scaling.items()):
            trivial = r.trivial.mean_batched if r.trivial else float("nan")
            batched = r.ours.mean_batched
            net = _net_cost(r)
            rows.append(
                [
                    label,
                    f"{circuits:,}",
                    fmt_ns(r.upstream.median),
                    fmt_ns(r.ours.median),
                    fmt_ns(r.ours.p99),
                    fmt_ratio(_loop_ratio(r)),
                    f"{(r.ours.median - base) / base:+.0%}",
                    f"{fmt_ns(batched)} ({(batched - base_batched) / base_batched:+.0%})",
                    f"{fmt_ns(trivial)} ({(trivial - trivial_base) / trivial_base:+.0%})",
                    f"{fmt_ns(net)} ({(net - net_base) / net_base:+.0%})",
                    r.check,
                ]
            )
    producer_table = table(
        [
            "Backend",
            "circuits",
            "upstream median",
            "ours median",
            "ours p99",
            "upstream / ours",
            "vs 1 circuit",
            "ours batched (vs 1)",
            "no-op per-circuit listener, batched (vs 1)",
            "ours - no-op, batched (vs 1)",
            "metrics after",
        ],
        rows,
    )
    rows = []
    for label, res in results.items():
        for circuits, r in sorted(res.scaling_drain.items()):
            up = res.upstream_drain[circuits]
            rows.append(
                [
                    label,
                    f"{circuits:,}",
                    fmt_rate(r.rate),
                    fmt_rate(up.rate),
                    fmt_ratio(ratio(r.rate, up.rate)),
                    r.check,
                ]
            )
    drain_table = table(
        ["Backend", "circuits", "drain rate", "upstream direct rate", "ratio", "metrics after"],
        rows,
    )
    scrape_table = table(
        [
            "circuits",
            "upstream generate_latest",
            "ours generate_latest",
            "ours / upstream",
            "bytes (upstream / ours)",
        ],
        [
            [
                f"{scraped.circuits:,}",
                fmt_ns(scraped.upstream_ns),
                fmt_ns(scraped.ours_ns),
                fmt_ratio(ratio(scraped.ours_ns, scraped.upstream_ns)),
                f"{scraped.upstream_bytes:,} / {scraped.ours_bytes:,}",
            ]
        ],
    )
    return (
        "## 4. Scaling with the number of circuits\n\n"
        "Producer cost: path (a) of section 1, each round sending to its own random circuits "
        "(so 10,000 circuits are really spread over), every series created beforehand. The "
        "*no-op per-circuit listener* (a Python object per circuit whose call only appends "
        "`(self, signal)` to a deque, so it touches no per-circuit object but itself) is timed "
        "in the same rounds, from a call list of the same shape: its growth is what reaching a "
        "different, cache-cold Python object per signal costs any listener (the call list's "
        "entries, the listener object). *ours - no-op* is what our code adds on top of that; "
        "any per-circuit cost of ours (our listener's target, which the queued item references, "
        "or any lookup that grew with the circuits) stays in it. With 1 circuit every call hits "
        "the same hot object; with 10,000, each round's 256 calls go to 256 objects last touched "
        "tens of rounds earlier. "
        f"Drain: {cfg.drain_signals:,} signals on the loop thread, `max_buffer_size="
        f"{cfg.big_buffer}`.\n\n" + producer_table + "\n\n" + drain_table + "\n\n"
        "Scrape (backend-independent, plain `generate_latest` of the two circuit-breaker "
        "metrics, each circuit having made one transition; upstream's series live on the "
        "default registry, ours on their own):\n\n" + scrape_table
    )


def memory_section(cfg: Config, results: dict[str, BackendResults]) -> str:
    rows: list[list[str]] = []
    for label, res in results.items():
        growth = _memory_growth(res)
        rows.extend(
            [
                label,
                f"{r.signals:,}",
                fmt_bytes(r.peak),
                f"{r.seconds:.2f} s",
                fmt_rate(r.signals / r.seconds),
                _paths(r.stats),
                r.check,
            ]
            for r in res.memory
        )
        rows.append([label, "ratio (big / small)", f"{growth:.2f}x", "", "", "", ""])
    headers = [
        "Backend",
        "signals",
        "peak traced memory",
        "wall time",
        "throughput",
        "paths taken",
        "metrics after",
    ]
    return (
        "## 5. Memory\n\n"
        f"`max_buffer_size=8`, {cfg.memory_threads} threads and the loop thread producing at "
        "once (the loop task yields every 64 signals) over 100 circuits; `tracemalloc` peak "
        "above the baseline taken just before the storm (signals are generated on the fly, "
        "so the pipeline is what can grow). Wall time includes tracemalloc's own overhead.\n\n"
        + table(headers, rows)
    )


def breakers_section(cfg: Config, results: dict[str, BackendResults]) -> str:
    rows: list[list[str]] = []
    for label, res in results.items():
        for kind, flips in (
            ("AsyncCircuitBreaker", res.async_flips),
            ("CircuitBreaker (sync)", res.sync_flips),
        ):
            if flips is None:
                rows.append([label, kind, "n/a: asyncio only", "", "", "", "", ""])
                continue
            none50, _ = flips.summary("none")
            up50, up99 = flips.summary("upstream")
            our50, our99 = flips.summary("ours")
            rows.append(
                [
                    label,
                    kind,
                    fmt_ns(none50),
                    f"{fmt_ns(up50)} / {fmt_ns(up99)}",
                    f"{fmt_ns(our50)} / {fmt_ns(our99)}",
                    fmt_ratio(ratio(up50, our50)),
                    fmt_ratio(ratio(up50 - none50, max(1.0, our50 - none50))),
                    flips.check,
                ]
            )
    headers = [
        "Backend",
        "Breaker",
        "no listener p50",
        "upstream p50 / p99",
        "ours p50 / p99",
        "whole call: upstream / ours",
        "listener share: upstream / ours",
        "metrics after",
    ]
    return (
        "## 6. Real breakers\n\n"
        f"fluxgate breakers flipping state {cfg.flips:,} times per configuration "
        "(`force_open()` then `reset()`, each a transition that notifies the listener; both "
        "timed), with no listener, upstream's and ours (consumer running, `flush()` between "
        "batches of 128 flips, untimed). *Listener share* subtracts the no-listener median. "
        "fluxgate's `AsyncCircuitBreaker` uses `asyncio.Lock` and `asyncio.gather`, so it "
        "cannot run on trio.\n\n" + table(headers, rows)
    )


def companion_section(title: str, module_name: str, *, quick: bool) -> str:
    """A companion benchmark's table (``module_name.run``), when that module exists."""
    title = f"## {title}\n\n"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return title + f"not available (`{module_name}` is not installed)."
    body: str = module.run(quick)
    return title + body.strip()


def anyio_breaker_section(*, quick: bool) -> str:
    """Section 7: ``bench.bench_breaker``."""
    return companion_section(
        "7. anyio circuit breaker: per-call overhead", BREAKER_BENCH_MODULE, quick=quick
    )


def health_section(*, quick: bool) -> str:
    """Section 8: ``bench.bench_health``."""
    return companion_section(
        "8. Breaker health collector: scrape cost", HEALTH_BENCH_MODULE, quick=quick
    )


def time_in_state_section(*, quick: bool) -> str:
    """Section 9: ``bench.bench_time_in_state``."""
    return companion_section(
        "9. Time in state: cost, off vs on", TIME_IN_STATE_BENCH_MODULE, quick=quick
    )


def render(
    cfg: Config,
    results: dict[str, BackendResults],
    scraped: scrape.ScrapeResult,
    seconds: float,
    argv: Sequence[str],
) -> str:
    mode = "quick (CI smoke sizes: not real figures)" if cfg.quick else "full"
    header = [
        "# fluxgate-stream benchmark report",
        "",
        f"Mode: {mode}; backends: {', '.join(results)}; run time {seconds:.0f} s.",
        "Reproduce: `make bench`"
        + (f" (here: `python -m bench {' '.join(argv)}`)" if argv else "")
        + ".",
        "",
        "Machine:",
        "",
        *machine_lines(),
        "",
        "Upstream is `fluxgate.listeners.prometheus.PrometheusListener`, measured in the same "
        "process run; ratios are upstream / ours (how many times cheaper ours is). Per-call "
        "medians and p99 come from timing every call on its own with `time.perf_counter_ns` "
        "(timer overhead subtracted); *batched* figures time a whole loop and subtract the empty "
        "loop, which resolves costs below the timer's own, like the `deque.append` floor.",
    ]
    sections = [
        "\n".join(header),
        targets_section(cfg, results),
        producer_section(cfg, results),
        drain_section(cfg, results),
        lag_section(cfg, results),
        scaling_section(cfg, results, scraped),
        memory_section(cfg, results),
        breakers_section(cfg, results),
        anyio_breaker_section(quick=cfg.quick),
        health_section(quick=cfg.quick),
        time_in_state_section(quick=cfg.quick),
    ]
    return "\n\n".join(sections) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite, write the report to ``--output`` and print it. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CI smoke run")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the Markdown report"
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=["asyncio", "trio", "uvloop"],
        help="run only these backends (default: every one installed)",
    )
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(args_list)
    cfg = QUICK if args.quick else FULL
    backends = [b for b in available_backends() if not args.backend or b.label in args.backend]
    started = time.perf_counter()
    results: dict[str, BackendResults] = {}
    for backend in backends:
        results[backend.label] = anyio.run(
            run_backend, cfg, backend, backend=backend.name, backend_options=backend.options
        )
    _progress("4. scrape")
    scraped = scrape.scrape_times(max(cfg.scaling), repeats=3 if cfg.quick else 7)
    report = render(cfg, results, scraped, time.perf_counter() - started, args_list)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    print(report)
    _progress(f"report written to {args.output}")
    return 0


__all__ = ["main", "median"]
