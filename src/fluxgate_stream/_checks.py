"""The call-site checks: every argument a user hands us is checked here, in one message style.

Each check raises at the call site, before anything is queued or written, with a message that
names the argument and what was wrong: ``"<argument> must be <rule>, got <what came>"``. Callers
may not be type-checked, so the checks look at run-time types; a ``bool`` is never accepted as
a number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from fluxgate.circuitbreaker import CircuitBreakerInfo
from fluxgate.signal import Signal

from fluxgate_stream._catalogue import ALL_STATES
from fluxgate_stream._compat import slow_thresholds

if TYPE_CHECKING:
    from fluxgate.state import State

__all__ = [
    "KNOWN_STATES",
    "check_bool",
    "check_breaker",
    "check_choice",
    "check_count",
    "check_name",
    "check_seconds",
    "check_signal",
    "check_state",
    "check_thresholds",
    "check_timestamp",
]

#: fluxgate's state names, as a set for the listeners' fast membership test.
KNOWN_STATES: frozenset[object] = frozenset(ALL_STATES)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a usable ``circuit_name`` (or other label value).

    Raises:
        TypeError: ``value`` is not a ``str``.
        ValueError: ``value`` is empty.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must be a non-empty str")
    return value


def check_bool(value: object, what: str) -> bool:
    """Return ``value`` if it is a ``bool``.

    Raises:
        TypeError: it is not.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, got {type(value).__name__}")
    return value


def check_count(value: object, what: str, *, optional: bool = False) -> int | None:
    """Return ``value`` if it is an ``int`` of at least 1 (or ``None``, when ``optional``).

    Raises:
        TypeError: ``value`` is not an ``int`` (nor ``None``, when ``optional``).
        ValueError: it is less than 1.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{what} must be {kind}, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return value


def check_seconds(value: object, what: str, *, zero: bool) -> float:
    """Return ``value`` as a float if it is a number of seconds above 0.

    With ``zero``, 0 is allowed and the number must be finite (a batch window); without, any
    positive number is (an interval to sleep).

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: it is out of range, or NaN.
    """
    if not _is_number(value):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    seconds = cast("float", value)
    if zero:
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"{what} must be a finite number of seconds >= 0, got {value}")
    elif not seconds > 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return float(seconds)


def check_state(value: object, what: str) -> State:
    """Return ``value`` as a fluxgate ``State``.

    Raises:
        ValueError: ``value`` is not one of fluxgate's six state names; the message names ``what``.
    """
    try:
        known = value in KNOWN_STATES
    except TypeError:  # unhashable: certainly not a state name
        known = False
    if not known:
        raise ValueError(f"{what} must be one of {', '.join(ALL_STATES)}; got {value!r}")
    return cast("State", value)  # membership in KNOWN_STATES proves it


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
    if not _is_number(timestamp):
        raise TypeError(
            f"Signal.timestamp must be a number of seconds, got {type(timestamp).__name__}"
        )
    if not math.isfinite(cast("float", timestamp)):
        raise ValueError(f"Signal.timestamp must be finite, got {timestamp!r}")


def check_breaker(breaker: object) -> None:
    """Raise unless ``breaker.info()`` answers a ``CircuitBreakerInfo`` now.

    Raises:
        TypeError: ``breaker`` has no callable ``info``, or it returned something else.
    """
    info = getattr(breaker, "info", None)
    if not callable(info):
        raise TypeError(
            f"breaker must be a fluxgate circuit breaker (an object with an info() method), "
            f"got {type(breaker).__name__}"
        )
    answer: object = info()
    if not isinstance(answer, CircuitBreakerInfo):
        raise TypeError(
            f"breaker.info() must return a fluxgate CircuitBreakerInfo, got {type(answer).__name__}"
        )


def check_thresholds(breaker: object, given: object) -> tuple[float, ...]:
    """Return the slow-call thresholds to export for ``breaker``, sorted, without duplicates.

    ``given`` wins; otherwise the breaker's own (fluxgate's breakers collect their ``SlowRate``
    thresholds, and classify every call against exactly those); otherwise none.

    Raises:
        TypeError: ``given`` is not an iterable of real numbers.
        ValueError: a threshold in ``given`` is not positive and finite.
    """
    if given is None:
        found = slow_thresholds(breaker)
        if not isinstance(found, tuple):
            return ()
        items = cast("tuple[object, ...]", found)
        numbers = [cast("float", x) for x in items if _is_number(x)]
        return tuple(sorted({float(x) for x in numbers if math.isfinite(x) and x > 0}))
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise TypeError(
            f"slow_thresholds must be an iterable of numbers, got {type(given).__name__}"
        )
    out: set[float] = set()
    for value in cast("Iterable[object]", given):
        if not _is_number(value):
            raise TypeError(f"slow_thresholds must hold numbers, got {type(value).__name__}")
        number = cast("float", value)
        if not (math.isfinite(number) and number > 0):
            raise ValueError(f"slow_thresholds must be positive and finite, got {value!r}")
        out.add(float(number))
    return tuple(sorted(out))


def check_choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices`` (names such as an anyio backend's).

    Raises:
        TypeError: ``value`` is not a ``str``.
        ValueError: it is not one of ``choices``.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value
