"""The metered call traffic that ``tests/integration/test_calls_e2e.py`` has a real Prometheus read.

One script for both sides: the test makes it in its own process, and each multiprocess-mode
worker (``tests/children/calls_for_prometheus.py``) makes it for its own ``k``.
``make_breakers(k, ...)`` meters three ``AnyioCircuitBreaker``s (buckets 0.25 s and 10 s), each
with its ``PrometheusListener`` (the call alerts join the state gauge), which creates their
series at 0; ``make_calls(traffic, k)`` then makes, through a running consumer,
``CALLS_MADE`` times ``k``: ``payment_api`` ``3k`` successful and ``2k`` failed calls (the last
trips it by its failure rate) and ``4k`` refused ones; ``search_api``, whose tripper never trips,
``3k`` and ``2k``; ``ranking_api``, put in ``metrics_only`` first, ``2k`` failed (over its
tripper's threshold), ``3k`` successful (back under) and ``k`` failed (over again): the
``SHADOW_TRIPS_MADE`` crossings a shadow trip counts, whatever ``k``.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

import anyio
from fluxgate.errors import CallNotPermittedError
from fluxgate.retries import Never
from fluxgate.trippers import FailureRate, MinRequests
from fluxgate.windows import CountWindow
from prometheus_client import CollectorRegistry

from fluxgate_stream import AnyioCircuitBreaker, PrometheusListener, SignalPipeline, meter_calls

#: The buckets of the meters: every call here takes far less than 0.25 s.
BUCKETS = (0.25, 10.0)
#: Per circuit and kind, the calls each run of ``make_calls(traffic, k)`` makes (times k).
CALLS_MADE = {
    "payment_api": {"successful": 3, "failed": 2, "not_permitted": 4},
    "search_api": {"successful": 3, "failed": 2},
    "ranking_api": {"successful": 3, "failed": 3},
}
#: The shadow trips of each run of ``make_calls(traffic, k)``: ranking_api's crossings.
SHADOW_TRIPS_MADE = 2


@dataclass
class Traffic:
    """The metered breakers of one process, and the pipeline their metrics go through."""

    pipeline: SignalPipeline
    payment: AnyioCircuitBreaker
    search: AnyioCircuitBreaker
    ranking: AnyioCircuitBreaker


def make_breakers(
    k: int,
    pipeline: SignalPipeline,
    registry: CollectorRegistry | None = None,
) -> Traffic:
    """The three breakers, metered in ``registry`` (``None``: the default, as in a worker).

    ``payment_api`` trips at its ``5k``-th call, by its failure rate (2 of 5 failed);
    ``ranking_api``'s tripper holds from 2 calls on while half of them failed, its window holds
    every call.
    """

    def listening(name: str) -> list[PrometheusListener]:
        return [PrometheusListener(name, registry, pipeline=pipeline)]

    payment = AnyioCircuitBreaker(
        tripper=MinRequests(5 * k) & FailureRate(0.4),
        retry=Never(),
        listeners=listening("payment_api"),
    )
    search = AnyioCircuitBreaker(
        tripper=MinRequests(10**9) & FailureRate(0.5), listeners=listening("search_api")
    )
    ranking = AnyioCircuitBreaker(
        window=CountWindow(6 * k),
        tripper=MinRequests(2) & FailureRate(0.5),
        listeners=listening("ranking_api"),
    )
    meter_calls(payment, "payment_api", registry, pipeline=pipeline, buckets=BUCKETS)
    meter_calls(search, "search_api", registry, pipeline=pipeline, buckets=BUCKETS)
    meter_calls(ranking, "ranking_api", registry, pipeline=pipeline, buckets=BUCKETS)
    return Traffic(pipeline, payment, search, ranking)


async def ok() -> None:
    pass


async def fail() -> None:
    raise ConnectionError


async def make_calls(traffic: Traffic, k: int) -> None:
    """Make ``CALLS_MADE`` times ``k`` through a running consumer, and flush it."""
    payment, search, ranking = traffic.payment, traffic.search, traffic.ranking
    async with anyio.create_task_group() as tg:
        await tg.start(traffic.pipeline.run)
        await ranking.metrics_only()
        for cb in (payment, search):
            for _ in range(3 * k):
                await cb.call(ok)
            for _ in range(2 * k):
                with suppress(ConnectionError):
                    await cb.call(fail)
        assert (payment.info().state, search.info().state) == ("open", "closed")
        for _ in range(4 * k):
            with suppress(CallNotPermittedError):
                await payment.call(ok)
        # Failed 2k of 2k (over from the 2nd call), 2k of 5k (under from the (4k + 1)-th), then
        # 3k of 6k (over at the last): two crossings, and calls are never refused.
        for failing, calls in ((True, 2 * k), (False, 3 * k), (True, k)):
            for _ in range(calls):
                with suppress(ConnectionError):
                    await ranking.call(fail if failing else ok)
        assert ranking.info().state == "metrics_only"
        await traffic.pipeline.flush()
        tg.cancel_scope.cancel()
