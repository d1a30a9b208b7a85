"""Reading metrics back from a real registry, for assertions.

The names come from the library's catalogue; ``tests/core/test_catalogue.py`` checks the catalogue
against upstream's listener and against what a registry really exports.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from fluxgate_stream import ALL_STATES
from fluxgate_stream._catalogue import STATE, TRANSITIONS


def samples(
    registry: CollectorRegistry, name: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of our two metrics (or those of circuit ``name``), minus ``_created``."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in registry.collect():
        if family.name not in (STATE.name, TRANSITIONS.name):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if name is not None and sample.labels.get("circuit_name") != name:
                continue
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def gauge(registry: CollectorRegistry, name: str) -> dict[str, float | None]:
    """The six state series of circuit ``name`` (None where absent)."""
    return {
        state: registry.get_sample_value(STATE.sample, {"circuit_name": name, "state": state})
        for state in ALL_STATES
    }


def shown(registry: CollectorRegistry, name: str) -> str | None:
    """The state circuit ``name`` shows: the one series at 1, the others at 0; None if absent."""
    values = gauge(registry, name)
    if all(v is None for v in values.values()):
        return None
    assert all(v is not None for v in values.values()), values
    ones = [s for s, v in values.items() if v == 1.0]
    assert len(ones) == 1, values
    assert sum(v or 0 for v in values.values()) == 1.0, values
    return ones[0]


def count(registry: CollectorRegistry, name: str, old: str, new: str) -> float | None:
    return registry.get_sample_value(
        TRANSITIONS.sample, {"circuit_name": name, "old_state": old, "new_state": new}
    )
