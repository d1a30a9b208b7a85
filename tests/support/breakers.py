"""Real fluxgate breakers configured to move quickly, and a ground-truth recording listener."""

from __future__ import annotations

from collections import Counter
from contextlib import suppress

from fluxgate import AsyncCircuitBreaker, CallNotPermittedError, CircuitBreaker
from fluxgate.permits import All
from fluxgate.retries import Always
from fluxgate.signal import Signal
from fluxgate.trippers import FailureRate, MinRequests
from fluxgate.windows import CountWindow


class Recorder:
    """Records every signal a breaker emits: the truth our metrics must match."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []

    def __call__(self, signal: Signal) -> None:
        self.signals.append(signal)

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter((s.old_state, s.new_state) for s in self.signals)


def quick(listeners: list[object]) -> dict[str, object]:
    """Breaker settings that open after two failures and probe again at once."""
    return {
        "window": CountWindow(2),
        "tripper": MinRequests(2) & FailureRate(0.5),
        "retry": Always(),
        "permit": All(),
        "listeners": listeners,
    }


def sync_breaker(*listeners: object) -> CircuitBreaker:
    return CircuitBreaker(**quick(list(listeners)))  # type: ignore[arg-type]  # test settings


def async_breaker(*listeners: object) -> AsyncCircuitBreaker:
    return AsyncCircuitBreaker(**quick(list(listeners)))  # type: ignore[arg-type]  # test settings


def fail() -> None:
    raise ConnectionError("dependency down")


def ok() -> str:
    return "ok"


def drive(cb: CircuitBreaker, pattern: str) -> None:
    """Call ``cb`` once per character: ``x`` fails, ``.`` succeeds; refusals are expected."""
    for step in pattern:
        with suppress(ConnectionError, CallNotPermittedError):
            cb.call(fail if step == "x" else ok)


async def adrive(cb: AsyncCircuitBreaker, pattern: str) -> None:
    async def afail() -> None:
        fail()

    async def aok() -> str:
        return ok()

    for step in pattern:
        with suppress(ConnectionError, CallNotPermittedError):
            await cb.call(afail if step == "x" else aok)
