"""Section 6: the whole breaker call, what a user pays, per breaker type and listener.

Breakers: fluxgate's sync ``CircuitBreaker`` (called on the loop thread), fluxgate's
``AsyncCircuitBreaker`` (built on ``asyncio.Lock`` and ``asyncio.gather``: asyncio and uvloop
only) and our ``AnyioCircuitBreaker`` (asyncio and trio). Two actions, each timed as a whole call:

* *transition*: ``force_open()`` then ``reset()``, each one transition that notifies the
  listener (both timed);
* *failing call that trips*: ``call(failing)`` on a closed breaker whose tripper is
  ``FailureStreak(1)``: the call records the failure, trips (closed -> open, one notification)
  and raises; the breaker is then ``reset()`` untimed.

Listeners: none, a no-op (a callable object whose call does nothing: the floor any listener
pays), upstream's ``PrometheusListener`` and ours (consumer running, ``flush()`` between
batches, untimed). Configurations take turns in batches of 128 operations, so drift hits all
alike; the figure is each configuration's median, and its cost over the same breaker with no
listener.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from fluxgate import AsyncCircuitBreaker, CircuitBreaker
from fluxgate.trippers import FailureStreak

from bench.harness import median, ns, percentile, timer_overhead
from bench.workload import Ours, Upstream
from fluxgate_stream import AnyioCircuitBreaker

if TYPE_CHECKING:
    from fluxgate.signal import Signal

LISTENERS = ("none", "no-op", "upstream", "ours")
ACTIONS = ("transition", "failing call that trips")
BREAKERS = ("CircuitBreaker", "AsyncCircuitBreaker", "AnyioCircuitBreaker")


class NoOp:
    """A listener that does nothing: what calling any listener costs a breaker."""

    __slots__ = ()

    def __call__(self, _signal: Signal, /) -> None:
        return None


class Boom(Exception):
    """What the failing call raises."""


def failing() -> None:
    raise Boom


async def afailing() -> None:
    raise Boom


@dataclass
class WholeCall:
    """Whole-call samples, ns, per listener, of one (breaker, action)."""

    breaker: str
    action: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    check: str = "exact"
    note: str = ""

    def median(self, listener: str) -> float:
        return median(self.samples.get(listener, []))

    def p99(self, listener: str) -> float:
        return percentile(self.samples.get(listener, []), 99)

    def over_none(self, listener: str) -> float:
        """The listener's median over the no-listener median, as a fraction (0.3 = +30%)."""
        none = self.median("none")
        return (self.median(listener) - none) / none if none > 0 else float("nan")


def _listeners(ours: Ours, upstream: Upstream) -> dict[str, list[Any]]:
    return {
        "none": [],
        "no-op": [NoOp()],
        "upstream": [upstream.listeners[0]],
        "ours": [ours.listeners[0]],
    }


def _make(kind: str, action: str, listeners: list[Any]) -> Any:  # noqa: ANN401  # three unrelated breaker classes
    tripper = FailureStreak(1) if action != "transition" else None
    cls = {
        "CircuitBreaker": CircuitBreaker,
        "AsyncCircuitBreaker": AsyncCircuitBreaker,
        "AnyioCircuitBreaker": AnyioCircuitBreaker,
    }[kind]
    return cls(tripper=tripper, listeners=listeners)


def _sync_op(cb: CircuitBreaker, action: str) -> Callable[[list[float], float], None]:
    force_open, reset, call = cb.force_open, cb.reset, cb.call
    if action == "transition":

        def flip(out: list[float], overhead: float) -> None:
            t0 = ns()
            force_open()
            t1 = ns()
            reset()
            t2 = ns()
            out.append(t1 - t0 - overhead)
            out.append(t2 - t1 - overhead)

        return flip

    def trip(out: list[float], overhead: float) -> None:
        t0 = ns()
        try:
            call(failing)
        except Boom:
            t1 = ns()
            out.append(t1 - t0 - overhead)
        reset()

    return trip


def _async_op(cb: Any, action: str) -> Callable[[list[float], float], Awaitable[None]]:  # noqa: ANN401  # either async breaker class
    force_open, reset, call = cb.force_open, cb.reset, cb.call
    if action == "transition":

        async def flip(out: list[float], overhead: float) -> None:
            t0 = ns()
            await force_open()
            t1 = ns()
            await reset()
            t2 = ns()
            out.append(t1 - t0 - overhead)
            out.append(t2 - t1 - overhead)

        return flip

    async def trip(out: list[float], overhead: float) -> None:
        t0 = ns()
        try:
            await call(afailing)
        except Boom:
            t1 = ns()
            out.append(t1 - t0 - overhead)
        await reset()

    return trip


async def whole_call(backend: str, kind: str, action: str, ops: int, batch: int = 128) -> WholeCall:
    """``ops`` operations per listener of breaker ``kind`` doing ``action`` on ``backend``."""
    out = WholeCall(kind, action)
    if kind == "AsyncCircuitBreaker" and backend == "trio":
        out.note = "n/a: asyncio only"
        return out
    ours, upstream = Ours.make(1), Upstream.make(1)
    configs = _listeners(ours, upstream)
    overhead = timer_overhead()
    per_op = 2  # two transitions per operation: force_open and reset, or a trip and its reset
    async with anyio.create_task_group() as tg:
        await tg.start(ours.pipeline.run)
        breakers = {name: _make(kind, action, ls) for name, ls in configs.items()}
        for name in configs:
            out.samples[name] = []
        done = 0
        rotation = 0
        while done < ops:
            step = min(batch, ops - done)
            names = list(configs)
            names = names[rotation % len(names) :] + names[: rotation % len(names)]
            rotation += 1
            for name in names:
                samples = out.samples[name]
                if kind == "CircuitBreaker":
                    sync_op = _sync_op(breakers[name], action)
                    for _ in range(step):
                        sync_op(samples, overhead)
                else:
                    async_op = _async_op(breakers[name], action)
                    for _ in range(step):
                        await async_op(samples, overhead)
            done += step
            await ours.pipeline.flush()  # untimed: the consumer catches up between batches
        tg.cancel_scope.cancel()
    counted = ours.transitions()
    if counted != per_op * ops:
        out.check = f"WRONG: {counted:.0f} of {per_op * ops}"
    theirs = upstream.transitions()
    if theirs != per_op * ops:
        out.check = f"upstream WRONG: {theirs:.0f} of {per_op * ops}"
    upstream.close()
    return out


async def every_breaker(backend: str, ops: int) -> list[WholeCall]:
    """Every (breaker, action) on ``backend``."""
    return [await whole_call(backend, kind, action, ops) for kind in BREAKERS for action in ACTIONS]
