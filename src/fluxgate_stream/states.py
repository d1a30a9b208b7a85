"""fluxgate's six states, and the call-site checks that keep bad signals out of the pipeline."""

from __future__ import annotations

import math
from typing import cast, get_args

from fluxgate.signal import Signal
from fluxgate.state import State

__all__ = ["ALL_STATES", "KNOWN_STATES", "check_signal", "check_state", "check_timestamp"]

ALL_STATES: tuple[State, ...] = get_args(State)
"""fluxgate's states in declaration order: closed, open, half_open, metrics_only, disabled,
forced_open. Every circuit exports one gauge series per state."""
#: The same, as a set for fast membership tests.
KNOWN_STATES: frozenset[object] = frozenset(ALL_STATES)
_KNOWN = KNOWN_STATES


def check_state(value: object, what: str) -> State:
    """Return ``value`` as a fluxgate ``State``.

    Raises:
        ValueError: ``value`` is not one of fluxgate's six state names; the message names ``what``.
    """
    try:
        known = value in _KNOWN
    except TypeError:  # unhashable: certainly not a state name
        known = False
    if not known:
        raise ValueError(f"{what} must be one of {', '.join(ALL_STATES)}; got {value!r}")
    return cast("State", value)  # membership in _KNOWN proves it


def check_signal(signal: object) -> Signal:
    """Return ``signal`` after checking it is a fluxgate ``Signal`` between two known states.

    Raises:
        TypeError: ``signal`` is not a ``fluxgate.signal.Signal``.
        ValueError: its ``old_state`` or ``new_state`` is not one of fluxgate's six states.
    """
    if not isinstance(signal, Signal):
        raise TypeError(
            f"PrometheusListener expects a fluxgate.signal.Signal, got {type(signal).__name__}"
        )
    check_state(signal.old_state, "Signal.old_state")
    check_state(signal.new_state, "Signal.new_state")
    return signal


def check_timestamp(signal: Signal) -> None:
    """Check that a signal's ``timestamp`` is a finite number of seconds (for time in state).

    Raises:
        TypeError: ``signal.timestamp`` is not an ``int`` or a ``float`` (a ``bool`` is neither).
        ValueError: it is infinite or NaN.
    """
    timestamp = cast("object", signal.timestamp)  # checked at run time: Signal does not
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise TypeError(
            f"Signal.timestamp must be a number of seconds, got {type(timestamp).__name__}"
        )
    if not math.isfinite(timestamp):
        raise ValueError(f"Signal.timestamp must be finite, got {timestamp!r}")
