"""The timing harness: ``perf_counter_ns``, warm-up, many rounds, medians and p99.

Two ways of timing a call, used side by side:

* *per call*: ``t0 = perf_counter_ns(); f(s); t1 = perf_counter_ns()`` around every single call,
  minus the timer's own median overhead (two back-to-back ``perf_counter_ns`` calls). This gives
  the distribution, hence the median and the p99 a breaker really pays.
* *batched*: one timing around a loop of calls, minus the same loop with an empty body, divided
  by the number of calls. This resolves costs far below the timer's overhead, such as a bare
  ``deque.append`` (the physical floor a producer is compared to).
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

ns = time.perf_counter_ns

#: A call as the harness times it: the callable and its one argument.
Call = tuple[Callable[[Any], object], Any]


def percentile(data: Sequence[float], q: float) -> float:
    """Return the nearest-rank ``q``-th percentile (0-100) of ``data`` (sorted or not)."""
    if not data:
        return float("nan")
    ordered = sorted(data)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def median(data: Sequence[float]) -> float:
    """Return the median of ``data`` (NaN when empty)."""
    if not data:
        return float("nan")
    ordered = sorted(data)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


def timer_overhead(samples: int = 20_000) -> float:
    """Return the median cost, in ns, of timing nothing with two ``perf_counter_ns`` calls."""
    out: list[int] = []
    for _ in range(samples):
        t0 = ns()
        out.append(ns() - t0)
    return median(out)


def empty_loop_ns(calls: Sequence[Call], rounds: int = 50) -> float:
    """Return the median per-iteration cost of ``for f, s in calls: pass``."""
    out: list[float] = []
    for _ in range(rounds):
        t0 = ns()
        for _f, _s in calls:
            pass
        out.append((ns() - t0) / len(calls))
    return median(out)


@dataclass
class Costs:
    """Per-signal costs of one producer, accumulated over rounds.

    Attributes:
        each: per-call samples, ns, timer overhead already subtracted (clamped at 0).
        batched: per-signal cost of each batched round, ns, empty-loop cost subtracted.
    """

    timer_ns: float
    loop_ns: float
    each: list[float] = field(default_factory=list)
    batched: list[float] = field(default_factory=list)

    def time_each(self, calls: Iterable[Call]) -> None:
        """Time every call on its own."""
        out: list[int] = []
        append = out.append
        for f, s in calls:
            t0 = ns()
            f(s)
            append(ns() - t0)
        overhead = self.timer_ns
        self.each.extend(max(0.0, x - overhead) for x in out)

    def time_batch(self, calls: Sequence[Call]) -> None:
        """Time the whole loop once, and record its per-call cost."""
        t0 = ns()
        for f, s in calls:
            f(s)
        elapsed = ns() - t0
        self.batched.append(max(0.0, elapsed / len(calls) - self.loop_ns))

    def by_position(self, burst: int) -> list[list[float]]:
        """The per-call samples by their call's place in its burst: ``[firsts, seconds, ...]``.

        For samples timed ``burst`` calls at a time (``time_each`` on ``burst`` calls each round).
        """
        if len(self.each) % burst:
            msg = f"{len(self.each)} samples are not bursts of {burst}"
            raise ValueError(msg)
        return [self.each[i::burst] for i in range(burst)]

    @property
    def median(self) -> float:
        """Median of the per-call samples, ns."""
        return median(self.each)

    @property
    def p99(self) -> float:
        """99th percentile of the per-call samples, ns."""
        return percentile(self.each, 99)

    @property
    def mean_batched(self) -> float:
        """Median over rounds of the batched per-call cost, ns."""
        return median(self.batched)


# -- formatting ----------------------------------------------------------------------------------


def fmt_ns(value: float) -> str:
    """Format a duration in ns with a sensible unit."""
    if math.isnan(value):
        return "n/a"
    if value < 1_000:
        return f"{value:.0f} ns"
    if value < 1_000_000:
        return f"{value / 1_000:.2f} µs"
    if value < 1_000_000_000:
        return f"{value / 1_000_000:.2f} ms"
    return f"{value / 1_000_000_000:.2f} s"


def fmt_ratio(value: float) -> str:
    """Format a ratio such as 37.2x."""
    if math.isnan(value) or math.isinf(value):
        return "n/a"
    if value >= 100:
        return f"{value:.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


def fmt_rate(per_second: float) -> str:
    """Format a rate in signals per second."""
    if per_second >= 1_000_000:
        return f"{per_second / 1_000_000:.2f} M/s"
    if per_second >= 1_000:
        return f"{per_second / 1_000:.1f} k/s"
    return f"{per_second:.0f} /s"


def fmt_bytes(value: float) -> str:
    """Format a byte count in KiB or MiB."""
    if value >= 1024 * 1024:
        return f"{value / (1024 * 1024):.2f} MiB"
    return f"{value / 1024:.1f} KiB"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Render a Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def ratio(slow: float, fast: float) -> float:
    """Return ``slow / fast`` (how many times cheaper ``fast`` is), inf when ``fast`` is 0."""
    if fast <= 0:
        return float("inf")
    return slow / fast


# -- the machine ---------------------------------------------------------------------------------


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:  # noqa: PTH123  # one read
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    """Describe the machine and the software the figures come from."""
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores ({platform.machine()})",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python: {platform.python_implementation()} {sys.version.split()[0]}",
        "- Packages: "
        + ", ".join(
            f"{name} {_pkg(name)}"
            for name in (
                "fluxgate-stream",
                "fluxgate",
                "prometheus-client",
                "anyio",
                "trio",
                "uvloop",
            )
        ),
    ]
