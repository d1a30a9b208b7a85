"""Ground truth for attack tests: what each producer sent, and what the metrics must show."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable

from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry

from fluxgate_stream import ALL_STATES
from fluxgate_stream._catalogue import OWN_TRANSITIONS, STATE, TRANSITIONS

from .metrics import samples

#: Every transition between two different states: 30 signals.
SIGNALS = tuple(Signal(old, new, 0.0) for old in ALL_STATES for new in ALL_STATES if old != new)

Sample = tuple[str, tuple[tuple[str, str], ...]]


class Truth:
    """What one producer sent to the circuits it alone drives. Not thread-safe: one per producer.

    ``record`` runs after the call returns, so a producer interrupted mid-call leaves that signal
    in ``inflight``: it may or may not have been recorded by the pipeline.
    """

    def __init__(self, names: Iterable[str], initial: str = "closed") -> None:
        self.last: dict[str, str] = dict.fromkeys(names, initial)
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.calls = 0
        self.slowest = 0.0

    def record(self, name: str, signal: Signal) -> None:
        self.last[name] = signal.new_state
        self.counts[name, signal.old_state, signal.new_state] += 1

    def merge(self, other: Truth) -> None:
        assert not set(self.last) & set(other.last), "circuits must have one producer each"
        self.last.update(other.last)
        self.counts.update(other.counts)
        self.calls += other.calls
        self.slowest = max(self.slowest, other.slowest)

    def expected(self) -> dict[Sample, float]:
        """The samples ``metrics.samples`` must return for these circuits.

        Their listeners have an initial state: each circuit's own transitions are at 0 until
        counted.
        """
        out: dict[Sample, float] = {}
        for name, shown in self.last.items():
            for state in ALL_STATES:
                labels = (("circuit_name", name), ("state", state))
                out[STATE.sample, labels] = float(state == shown)
            for old, new in OWN_TRANSITIONS:
                labels = (("circuit_name", name), ("new_state", new), ("old_state", old))
                out[TRANSITIONS.sample, labels] = 0.0
        for (name, old, new), n in self.counts.items():
            labels = (("circuit_name", name), ("new_state", new), ("old_state", old))
            out[TRANSITIONS.sample, labels] = float(n)
        return out


def observed(registry: CollectorRegistry, names: Iterable[str]) -> dict[Sample, float]:
    """Our samples of the circuits ``names`` only."""
    wanted = set(names)
    return {
        key: value
        for key, value in samples(registry).items()
        if dict(key[1]).get("circuit_name") in wanted
    }


def assert_exact(registry: CollectorRegistry, truth: Truth) -> None:
    """Every counter equals what was sent, and every gauge shows its circuit's latest state."""
    got = observed(registry, truth.last)
    want = truth.expected()
    if got != want:
        wrong = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))[:10]
        raise AssertionError(
            f"{len(wrong)}+ series differ, e.g. "
            + "; ".join(f"{k}: got {got.get(k)}, want {want.get(k)}" for k in wrong)
        )


def produce(
    send: dict[str, Callable[[Signal], object]],
    truth: Truth,
    count: int,
    seed: int,
    each: Callable[[], object] | None = None,
) -> None:
    """Send ``count`` random transitions to random circuits of ``send``, recording each one.

    Times every call (``truth.slowest``); calls ``each()`` after every call when given.
    """
    rng = random.Random(seed)
    names = list(send)
    clock = time.perf_counter
    for _ in range(count):
        name = names[rng.randrange(len(names))]
        signal = SIGNALS[rng.randrange(len(SIGNALS))]
        started = clock()
        send[name](signal)
        took = clock() - started
        truth.record(name, signal)
        truth.calls += 1
        truth.slowest = max(truth.slowest, took)
        if each is not None:
            each()
