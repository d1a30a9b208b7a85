"""Section 1 (and 4's producer half): what a breaker pays per signal, upstream vs ours.

Every function returns, per producer, a ``Costs`` (per-call samples and batched rounds). Rounds
alternate upstream, fluxgate-stream and the floor (a bare ``collections.deque.append`` of the
same signal), so drift hits all three alike.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from anyio import from_thread, to_thread

from bench.harness import Call, Costs, empty_loop_ns, timer_overhead
from bench.workload import Ours, Plan, Upstream, schedule

if TYPE_CHECKING:
    from bench.config import Config


@dataclass
class ProducerResult:
    """Per-signal costs of one producer path on one backend.

    ``trivial`` (scaling runs only): a do-nothing listener object per circuit (one Python call,
    a tuple of itself and the signal, a ``deque.append``: it touches no object but its own),
    called in the same pattern and timed as ours is, each call on its own (the round's first
    pass over its objects, cold with many circuits) and then as a batch (a second pass over
    the same objects, warm): what merely reaching a different Python object per signal costs,
    which is where many circuits slow any listener down.
    """

    upstream: Costs
    ours: Costs
    floor: Costs
    check: str
    trivial: Costs | None = None


class _Trivial:
    """The cheapest per-circuit listener there can be: remember the signal, nothing else.

    It queues ``(self, signal)``, so the only per-circuit object it touches is itself (which the
    call touches anyway): whatever ours costs beyond it at 10,000 circuits, our code costs.
    """

    __slots__ = ("_append",)

    def __init__(self, append: Callable[[object], None]) -> None:
        self._append = append

    def __call__(self, signal: object, /) -> None:
        self._append((self, signal))


def _fresh(calls: Sequence[Call]) -> tuple[Costs, Costs, Costs, deque[object], list[Call]]:
    timer = timer_overhead()
    loop = empty_loop_ns(calls)
    floor_queue: deque[object] = deque()
    floor_calls: list[Call] = [(floor_queue.append, s) for _, s in calls]
    return Costs(timer, loop), Costs(timer, loop), Costs(timer, loop), floor_queue, floor_calls


def _reset(*costs: Costs) -> None:
    """Throw away the warm-up rounds."""
    for each in costs:
        each.each.clear()
        each.batched.clear()


def _checked(ours: Ours, ours_plan: Plan, upstream: Upstream, up_plan: Plan) -> str:
    """Check both sides' metrics (then drop upstream's series); ``"exact"`` when both are."""
    mine = ours.check(ours_plan)
    theirs = upstream.check(up_plan)
    upstream.close()
    if theirs != "exact":
        return f"upstream {theirs}"
    return mine


@dataclass
class _Scenario:
    ours: Ours
    upstream: Upstream
    sent: Plan  # what each side was sent, for the check
    plans: list[Plan]  # one per round
    ours_calls: list[list[Call]]
    up_calls: list[list[Call]]
    floor_calls: list[list[Call]]
    floor_queue: deque[object]
    trivial_calls: list[list[Call]]
    up: Costs
    mine: Costs
    floor: Costs
    trivial: Costs


def _scenario(cfg: Config, n_circuits: int, max_buffer_size: int) -> _Scenario:
    """Warmed-up circuits on both sides, and one plan per round (so rounds spread over all)."""
    ours = Ours.make(n_circuits, max_buffer_size)
    upstream = Upstream.make(n_circuits)
    sent = ours.warm()
    upstream.warm()
    plans = [schedule(cfg.burst, n_circuits, seed=r) for r in range(cfg.warmup + cfg.rounds)]
    floor_queue: deque[object] = deque()
    ours_calls = [ours.calls(plan) for plan in plans]
    timer = timer_overhead()
    loop = empty_loop_ns(ours_calls[0])
    trivial = [_Trivial(floor_queue.append) for _ in range(n_circuits)]
    return _Scenario(
        ours,
        upstream,
        sent,
        plans,
        ours_calls,
        [upstream.calls(plan) for plan in plans],
        [[(floor_queue.append, s) for _, s in plan] for plan in plans],
        floor_queue,
        [[(trivial[i], s) for i, s in plan] for plan in plans],
        Costs(timer, loop),
        Costs(timer, loop),
        Costs(timer, loop),
        Costs(timer, loop),
    )


async def loop_thread(
    cfg: Config, circuit_counts: Sequence[int], max_buffer_size: int = 1024
) -> dict[int, ProducerResult]:
    """(a) On the event-loop thread, with the consumer running: bursts of ``cfg.burst`` calls.

    Between bursts (untimed) we await ``flush()``, so each burst starts with the consumer asleep
    and the first call of a burst pays its wake-up, as a breaker's first transition would. One
    scenario per number of circuits, each with its own pipeline; the scenarios' rounds are
    interleaved, so drift in the machine's speed hits every circuit count alike. Every circuit's
    series exist beforehand (warmed, untimed, on both sides), and each round sends to its own
    random circuits, so with 10,000 circuits the rounds spread over all of them.
    """
    scenarios = {n: _scenario(cfg, n, max_buffer_size) for n in circuit_counts}
    async with anyio.create_task_group() as tg:
        for sc in scenarios.values():
            await tg.start(sc.ours.pipeline.run)
        for r in range(cfg.warmup + cfg.rounds):
            for sc in scenarios.values():
                if r == cfg.warmup:
                    _reset(sc.up, sc.mine, sc.floor, sc.trivial)
                sc.up.time_each(sc.up_calls[r])
                sc.up.time_batch(sc.up_calls[r])
                sc.mine.time_each(sc.ours_calls[r])
                await sc.ours.pipeline.flush()
                sc.mine.time_batch(sc.ours_calls[r])
                await sc.ours.pipeline.flush()
                sc.floor.time_each(sc.floor_calls[r])
                sc.floor.time_batch(sc.floor_calls[r])
                sc.floor_queue.clear()
                # Timed as ours is, each call then the batch: a batch timed alone would be a
                # cold pass where ours' is warm, and the difference would not be ours.
                sc.trivial.time_each(sc.trivial_calls[r])
                sc.floor_queue.clear()
                sc.trivial.time_batch(sc.trivial_calls[r])
                sc.floor_queue.clear()
                sc.sent += sc.plans[r] + sc.plans[r]
        tg.cancel_scope.cancel()
    return {
        n: ProducerResult(
            sc.up,
            sc.mine,
            sc.floor,
            _checked(sc.ours, sc.sent, sc.upstream, sc.sent),
            sc.trivial,
        )
        for n, sc in scenarios.items()
    }


async def loop_thread_full(
    cfg: Config, n_circuits: int, max_buffer_size: int = 1024
) -> ProducerResult:
    """(a') On the loop thread with the stream full: every timed call goes to the overflow queue."""
    ours = Ours.make(n_circuits, max_buffer_size)
    upstream = Upstream.make(n_circuits)
    plan = schedule(cfg.burst, n_circuits)
    fill_plan = schedule(max_buffer_size, n_circuits, seed=2)
    ours_calls, up_calls = ours.calls(plan), upstream.calls(plan)
    fill = ours.calls(fill_plan)
    up, mine, floor, floor_queue, floor_calls = _fresh(ours_calls)
    times = 0
    async with anyio.create_task_group() as tg:
        await tg.start(ours.pipeline.run)
        for r in range(cfg.warmup + cfg.rounds):
            if r == cfg.warmup:
                _reset(up, mine, floor)
            up.time_each(up_calls)
            up.time_batch(up_calls)
            for f, s in fill:  # untimed: fill the stream
                f(s)
            mine.time_each(ours_calls)
            mine.time_batch(ours_calls)
            await ours.pipeline.flush()
            times += 2
            floor.time_each(floor_calls)
            floor.time_batch(floor_calls)
            floor_queue.clear()
        tg.cancel_scope.cancel()
    check = _checked(ours, (fill_plan + plan + plan) * (times // 2), upstream, plan * times)
    return ProducerResult(up, mine, floor, check)


async def worker_thread(
    cfg: Config, n_circuits: int, max_buffer_size: int = 1024
) -> ProducerResult:
    """(b) From a worker thread while the loop idles and the consumer runs: bursts, then flush.

    The worker times its calls; between bursts (untimed) it waits for ``flush()`` on the loop,
    so each burst starts with the consumer asleep and pays one wake-up.
    """
    ours = Ours.make(n_circuits, max_buffer_size)
    upstream = Upstream.make(n_circuits)
    plan = schedule(cfg.burst, n_circuits)
    ours_calls, up_calls = ours.calls(plan), upstream.calls(plan)
    up, mine, floor, floor_queue, floor_calls = _fresh(ours_calls)
    times = 0

    def worker() -> None:
        nonlocal times
        for r in range(cfg.warmup + cfg.rounds):
            if r == cfg.warmup:
                _reset(up, mine, floor)
            up.time_each(up_calls)
            up.time_batch(up_calls)
            mine.time_each(ours_calls)
            from_thread.run(ours.pipeline.flush)
            mine.time_batch(ours_calls)
            from_thread.run(ours.pipeline.flush)
            times += 2
            floor.time_each(floor_calls)
            floor.time_batch(floor_calls)
            floor_queue.clear()

    async with anyio.create_task_group() as tg:
        await tg.start(ours.pipeline.run)
        await to_thread.run_sync(worker)
        tg.cancel_scope.cancel()
    return ProducerResult(up, mine, floor, _checked(ours, plan * times, upstream, plan * times))


async def worker_thread_full(
    cfg: Config, n_circuits: int, max_buffer_size: int = 1024
) -> ProducerResult:
    """(b') From a thread while the loop is blocked and the bridge is full: the overflow queue.

    Each round runs in a fresh thread that the loop joins synchronously (so the consumer cannot
    run): it fills the bridge (untimed), then times its calls, which all go to the overflow queue.
    """
    ours = Ours.make(n_circuits, max_buffer_size)
    upstream = Upstream.make(n_circuits)
    plan = schedule(cfg.burst, n_circuits)
    fill_plan = schedule(max_buffer_size, n_circuits, seed=2)
    ours_calls, up_calls = ours.calls(plan), upstream.calls(plan)
    fill = ours.calls(fill_plan)
    up, mine, floor, floor_queue, floor_calls = _fresh(ours_calls)
    rounds = 0

    def one_round() -> None:
        up.time_each(up_calls)
        up.time_batch(up_calls)
        for f, s in fill:
            f(s)
        mine.time_each(ours_calls)
        mine.time_batch(ours_calls)
        floor.time_each(floor_calls)
        floor.time_batch(floor_calls)
        floor_queue.clear()

    async with anyio.create_task_group() as tg:
        await tg.start(ours.pipeline.run)
        for r in range(cfg.warmup + cfg.rounds):
            if r == cfg.warmup:
                _reset(up, mine, floor)
            thread = threading.Thread(target=one_round)
            thread.start()
            thread.join()  # blocks the loop on purpose: the consumer cannot take anything
            rounds += 1
            await ours.pipeline.flush()
        tg.cancel_scope.cancel()
    check = _checked(ours, (fill_plan + plan + plan) * rounds, upstream, plan * 2 * rounds)
    return ProducerResult(up, mine, floor, check)


async def sync_fallback(cfg: Config, n_circuits: int) -> ProducerResult:
    """(c) No consumer running: our listener applies directly, as upstream's does."""
    ours = Ours.make(n_circuits)
    upstream = Upstream.make(n_circuits)
    plan = schedule(cfg.burst, n_circuits)
    ours_calls, up_calls = ours.calls(plan), upstream.calls(plan)
    up, mine, floor, floor_queue, floor_calls = _fresh(ours_calls)
    times = 0
    for r in range(cfg.warmup + cfg.rounds):
        if r == cfg.warmup:
            _reset(up, mine, floor)
        up.time_each(up_calls)
        up.time_batch(up_calls)
        mine.time_each(ours_calls)
        mine.time_batch(ours_calls)
        times += 2
        floor.time_each(floor_calls)
        floor.time_batch(floor_calls)
        floor_queue.clear()
        await anyio.lowlevel.checkpoint()
    return ProducerResult(up, mine, floor, _checked(ours, plan * times, upstream, plan * times))
