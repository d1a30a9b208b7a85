"""Section 6: real fluxgate breakers flipping state, with no listener, upstream's, and ours.

``AsyncCircuitBreaker`` flips with ``await force_open()`` / ``await reset()`` (each a transition
that notifies its listeners); it is built on ``asyncio.Lock`` and ``asyncio.gather``, so it runs
on asyncio and uvloop only. The synchronous ``CircuitBreaker`` (``force_open()`` / ``reset()``)
is measured on every backend, called on the loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from fluxgate import AsyncCircuitBreaker, CircuitBreaker

from bench.harness import median, ns, percentile, timer_overhead
from bench.workload import Ours, Upstream

if TYPE_CHECKING:
    from fluxgate.listeners import Listener


@dataclass
class FlipCosts:
    """Whole-call costs of each transition, ns, per listener configuration."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    check: str = "exact"

    def summary(self, name: str) -> tuple[float, float]:
        data = self.samples.get(name, [])
        return median(data), percentile(data, 99)


def _configs() -> tuple[Ours, Upstream, dict[str, list[Listener]]]:
    ours = Ours.make(1)
    upstream = Upstream.make(1)
    configs: dict[str, list[Listener]] = {
        "none": [],
        "upstream": [upstream.listeners[0]],
        "ours": [ours.listeners[0]],  # type: ignore[list-item]  # a Listener by protocol, not by base class
    }
    return ours, upstream, configs


def _expect(ours: Ours, transitions: int) -> str:
    counted = ours.transitions()
    return "exact" if counted == transitions else f"WRONG: {counted:.0f} of {transitions}"


async def async_breaker(backend: str, flips: int, batch: int = 128) -> FlipCosts | None:
    """``AsyncCircuitBreaker`` flips; ``None`` where it cannot run (trio: it needs asyncio)."""
    if backend == "trio":
        return None
    ours, upstream, configs = _configs()
    overhead = timer_overhead()
    out = FlipCosts()
    async with anyio.create_task_group() as tg:
        await tg.start(ours.pipeline.run)
        breakers = {name: AsyncCircuitBreaker(listeners=ls) for name, ls in configs.items()}
        for name in configs:
            out.samples[name] = []
        done = 0
        while done < flips:
            for name, cb in breakers.items():
                samples = out.samples[name]
                for _ in range(min(batch, flips - done)):
                    t0 = ns()
                    await cb.force_open()
                    t1 = ns()
                    await cb.reset()
                    t2 = ns()
                    samples.append(t1 - t0 - overhead)
                    samples.append(t2 - t1 - overhead)
            done += min(batch, flips - done)
            await ours.pipeline.flush()  # untimed: the consumer catches up between batches
        tg.cancel_scope.cancel()
    out.check = _expect(ours, 2 * flips)
    upstream.close()
    return out


async def sync_breaker(flips: int, batch: int = 128) -> FlipCosts:
    """``CircuitBreaker`` flips on the loop thread, consumer running."""
    ours, upstream, configs = _configs()
    overhead = timer_overhead()
    out = FlipCosts()
    async with anyio.create_task_group() as tg:
        await tg.start(ours.pipeline.run)
        breakers = {name: CircuitBreaker(listeners=ls) for name, ls in configs.items()}
        for name in configs:
            out.samples[name] = []
        done = 0
        while done < flips:
            for name, cb in breakers.items():
                samples = out.samples[name]
                force_open: Callable[[], None] = cb.force_open
                reset: Callable[[], None] = cb.reset
                for _ in range(min(batch, flips - done)):
                    t0 = ns()
                    force_open()
                    t1 = ns()
                    reset()
                    t2 = ns()
                    samples.append(t1 - t0 - overhead)
                    samples.append(t2 - t1 - overhead)
            done += min(batch, flips - done)
            await ours.pipeline.flush()
        tg.cancel_scope.cancel()
    out.check = _expect(ours, 2 * flips)
    upstream.close()
    return out
