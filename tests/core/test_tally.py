"""``Tally.add_all``: a batch folded in bulk is what adding its items one by one makes.

The consumer hands every batch to ``add_all``, which folds a batch of transitions only (to
circuits that count no time in state and were not closed since) in C-level passes over it, and
any other batch item by item: the two must make the same records, key for key, in the same order.
``add_all`` needs the batch in sequence order, which the stream alone does not always keep (a
signal handler's listener call can precede the call it interrupted: tests/core/test_signals.py
runs that case for real), so the consumer sorts every batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fluxgate.signal import Signal
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from fluxgate_stream import ALL_STATES, SignalPipeline
from fluxgate_stream._apply import SEQUENCE, Item, Pending, Tally, apply
from fluxgate_stream._circuits import Circuit, circuit_for

from ..support.metrics import count, shown

if TYPE_CHECKING:
    from fluxgate.state import State

CIRCUITS = 3
states = st.sampled_from(ALL_STATES)
transition = st.tuples(st.integers(0, CIRCUITS - 1), states, states, st.floats(1e9, 2e9))
entry = st.one_of(
    transition,
    st.tuples(st.integers(0, CIRCUITS - 1)),  # a close()
    st.tuples(st.just(CIRCUITS), st.floats(0.0, 1.0)),  # a call, to a target of calls only
)


def circuits(
    *, timed: int | None = None, registry: CollectorRegistry | None = None
) -> list[Circuit]:
    """``CIRCUITS`` circuits, then one more that the tests send metered calls only (``Call``s)."""
    registry = CollectorRegistry() if registry is None else registry
    return [
        circuit_for(registry, f"c{i}", "closed", time_in_state=i == timed)
        for i in range(CIRCUITS + 1)
    ]


Entry = tuple[int, "State", "State", float] | tuple[int] | tuple[int, float]


def batch(entries: list[Entry], on: list[Circuit]) -> list[Item]:
    """The entries as items numbered in order, as a batch hands them over (sorted)."""
    base = next(SEQUENCE)
    for _ in entries:
        next(SEQUENCE)
    items: list[Item] = []
    for offset, e in enumerate(entries):
        if len(e) == 1:
            items.append((base + offset, on[e[0]], None))
        elif len(e) == 2:
            items.append((base + offset, on[e[0]], (0, e[1])))  # a Call: (kind, duration)
        else:
            circuit, old, new, at = e
            items.append((base + offset, on[circuit], Signal(old, new, at)))
    return items


def record(pending: Pending) -> tuple[object, ...]:
    folded = pending.folded
    if folded is None or isinstance(folded, list):  # nothing, or the calls kept
        spans = folded
    else:  # a time-in-state Span
        spans = {k: getattr(folded, k) for k in type(folded).__slots__}
    return (
        pending.close_seq,
        pending.state,
        pending.state_seq,
        pending.state_time,
        list(pending.counts.items()),
        spans,
        pending.queues,
    )


def records(tally: Tally) -> list[tuple[object, ...]]:
    return [(target.name, *record(p)) for target, p in tally.pending.items()]


def one_by_one(items: list[Item]) -> Tally:
    tally = Tally()
    for item in items:
        tally.add(item)
    return tally


def close_now(circuit: Circuit, seq: int) -> None:
    tally = Tally()
    tally.add((seq, circuit, None))
    assert apply(tally) == 0


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(entry, max_size=40),
    timed=st.one_of(st.none(), st.integers(0, CIRCUITS - 1)),
    closed_at=st.one_of(st.none(), st.tuples(st.integers(0, CIRCUITS - 1), st.integers(0, 40))),
)
def test_add_all_makes_what_adding_each_item_makes(entries, timed, closed_at):
    on = circuits(timed=timed)
    items = batch(entries, on)
    if closed_at is not None:  # a close() applied already, newer than some of the batch
        circuit, offset = closed_at
        close_now(on[circuit], (items[0][0] if items else next(SEQUENCE)) + offset)
    bulk = Tally()
    bulk.add_all(items)
    assert records(bulk) == records(one_by_one(items))


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(transition, min_size=1, max_size=40),
    closed_at=st.one_of(st.none(), st.tuples(st.integers(0, CIRCUITS - 1), st.integers(0, 40))),
)
def test_a_batch_of_transitions_only_makes_what_adding_each_item_makes(entries, closed_at):
    # The batches the bulk fold is for, which the property test above reaches less often: it
    # must fold them as add does, or decline those with an item older than an applied close().
    on = circuits()
    items = batch(entries, on)
    if closed_at is not None:
        circuit, offset = closed_at
        close_now(on[circuit], items[0][0] + offset)
    bulk = Tally()
    bulk.add_all(items)
    assert records(bulk) == records(one_by_one(items))


def test_a_batch_of_transitions_only_is_folded_in_bulk():
    on = circuits()
    items = batch(
        [(0, "closed", "open", 1e9), (1, "closed", "open", 2e9), (0, "open", "closed", 3e9)], on
    )
    bulk = Tally()
    assert bulk._fold_transitions(items)
    assert records(bulk) == records(one_by_one(items))
    first = bulk.pending[on[0]]
    assert (first.state, first.state_seq, first.state_time) == ("closed", items[2][0], 3e9)
    assert first.counts == {("closed", "open"): 1, ("open", "closed"): 1}


def test_a_batch_is_folded_item_by_item_when_bulk_would_be_wrong():
    plain = [(1, "closed", "open", 1e9), (1, "open", "closed", 2e9)]
    assert not Tally()._fold_transitions(batch([*plain, (1,)], circuits()))  # close() voids
    assert not Tally()._fold_transitions(batch(plain, circuits(timed=1)))  # a fold hook
    assert not Tally()._fold_transitions(batch([*plain, (CIRCUITS, 0.5)], circuits()))  # a call
    on = circuits()
    items = batch(plain, on)
    close_now(on[1], items[0][0] + 1)  # newer than the first transition, older than the second
    assert not Tally()._fold_transitions(items)
    assert one_by_one(items).pending[on[1]].counts == {("open", "closed"): 1}  # the first is void


def test_add_all_to_a_tally_holding_records_adds_to_them():
    on = circuits()
    first, then = batch([(0, "closed", "open", 1e9)], on), batch([(0, "open", "closed", 2e9)], on)
    bulk, each = one_by_one(first), one_by_one(first)
    bulk.add_all(then)
    each.add(then[0])
    assert records(bulk) == records(each)
    assert bulk.pending[on[0]].counts == {("closed", "open"): 1, ("open", "closed"): 1}


def test_the_consumer_puts_a_batch_out_of_sequence_order_back_in_order():
    # What the stream can hold: a signal handler's call (open -> half_open) ahead of the call it
    # interrupted (closed -> open), and behind them a transition of another circuit older than
    # a close() of it applied already. Taken as one batch, the gauge must show the newest state,
    # and the void transition must bring no series back.
    registry = CollectorRegistry()
    on = circuits(registry=registry)
    void, closed, older, newer = (next(SEQUENCE) for _ in range(4))
    close_now(on[1], closed)
    state = SignalPipeline()._state
    state.taken.extend(
        [
            (newer, on[0], Signal("open", "half_open", 2e9)),
            (older, on[0], Signal("closed", "open", 1e9)),
            (void, on[1], Signal("closed", "open", 3e9)),
        ]
    )
    state.apply_taken()
    assert not state.taken
    assert shown(registry, "c0") == "half_open"
    assert count(registry, "c0", "closed", "open") == 1.0
    assert count(registry, "c0", "open", "half_open") == 1.0
    assert shown(registry, "c1") is None
    assert count(registry, "c1", "closed", "open") is None
