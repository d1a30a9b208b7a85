"""The call-site checks: every argument a user hands us is checked here, in one message style.

Each check raises at the call site, before anything is queued or written, with a message that
names the argument and what was wrong: ``"<argument> must be <rule>, got <what came>"``. Callers
may not be type-checked, so the checks look at run-time types; a ``bool`` is never accepted as
a number.

A check returns what the caller must use from then on: a plain ``str``, ``int``, ``float`` or
``Signal`` with what the argument held. Subclasses of ``str``, ``int`` and ``float`` are accepted
and copied into the plain type, without calling their own methods: labels are exported with
``str()``, compared with ``==`` and hashed, and a subclass could make each answer something
else (an ``(str, Enum)`` state exports as ``St.open``). No check raises ``OverflowError``: an int
too large for a float is a ``ValueError``.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, cast

from fluxgate.circuitbreaker import CircuitBreakerInfo
from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry

from fluxgate_stream._catalogue import ALL_STATES
from fluxgate_stream._compat import slow_thresholds

if TYPE_CHECKING:
    from fluxgate.state import State

__all__ = [
    "KNOWN_STATES",
    "MAX_COUNT",
    "MAX_NAME_BYTES",
    "check_bool",
    "check_breaker",
    "check_buckets",
    "check_choice",
    "check_count",
    "check_name",
    "check_path",
    "check_registry",
    "check_seconds",
    "check_signal",
    "check_sink",
    "check_state",
    "check_target",
    "check_thresholds",
    "check_timeout",
    "check_timestamp",
    "shown",
]

#: fluxgate's state names, as a set for the listeners' fast membership test.
KNOWN_STATES: frozenset[object] = frozenset(ALL_STATES)

#: Each state name, to map a str equal to it onto fluxgate's own plain ``str``.
_CANONICAL: Final[dict[str, State]] = {state: state for state in ALL_STATES}

#: The longest name (a ``circuit_name`` or ``pipeline`` label value), in bytes of UTF-8. Every
#: series of a circuit repeats its name in every scrape (6 gauge series, up to 30 counters, 6 of
#: time in state, 10 of health): at 256 bytes a circuit costs at most about 13 KB per scrape,
#: while a 1 MiB name would add 50 MiB or more. 256 bytes is far more than a name needs (a
#: service and an endpoint, a tenant id), is what Prometheus' ``label_value_length_limit`` (which
#: counts bytes) is commonly set to or above, and is below the default limits of Mimir and
#: Cortex (2048). Bytes, not characters, because bytes are what a scrape carries.
MAX_NAME_BYTES: Final = 256

#: The largest count (a buffer size, a cap): no Python container holds more than ``sys.maxsize``
#: items, and every such count is exact as a float, as the self-metrics export it.
MAX_COUNT: Final = sys.maxsize


def shown(value: object) -> str:
    """``value`` as an error message shows it: short, calling no method a subclass overrides."""
    kind = type(value)
    if issubclass(kind, str):
        text = str.__str__(cast("str", value))
        return repr(text) if len(text) <= 60 else f"{text[:60]!r}... ({len(text)} characters)"
    if issubclass(kind, bool):
        return repr(bool(value))
    if issubclass(kind, int):
        number = int.__int__(cast("int", value))
        bits = number.bit_length()
        return repr(number) if bits <= 64 else f"an int of {bits} bits"
    if issubclass(kind, float):
        return float.__repr__(cast("float", value))
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  # a broken __repr__ must not replace the error being raised
        return f"a {kind.__name__}"
    return text if len(text) <= 60 else f"a {kind.__name__}"


def _is_number(value: object) -> bool:
    kind = type(value)
    return issubclass(kind, int | float) and not issubclass(kind, bool)


def _float(value: object, what: str, rule: str) -> float:
    """``value`` as a plain ``float``, if it is an ``int`` or a ``float`` (never a ``bool``).

    An int subclass's or a float subclass's own ``__float__`` is not called.

    Raises:
        TypeError: ``value`` is not a number; the message says ``what`` must be ``rule``.
        ValueError: it is an int too large for a float.
    """
    kind = type(value)
    if kind is float:
        return cast("float", value)
    if not _is_number(value):
        raise TypeError(f"{what} must be {rule}, got {kind.__name__}")
    if issubclass(kind, float):
        return float.__float__(cast("float", value))
    try:
        return int.__float__(cast("int", value))
    except OverflowError:
        raise ValueError(f"{what} must be {rule} a float can hold, got {shown(value)}") from None


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` as a plain ``str`` if it is a usable ``circuit_name`` or label value.

    Usable: non-empty, UTF-8 text, at most ``MAX_NAME_BYTES`` bytes of it.

    A ``str`` subclass is accepted and copied into a plain ``str`` of the same characters, which
    is what gets exported: its own ``__str__``, ``__hash__`` or ``__eq__`` are never called.

    Raises:
        TypeError: ``value`` is not a ``str``.
        ValueError: ``value`` is empty, not encodable as UTF-8 (a lone surrogate), or longer
            than ``MAX_NAME_BYTES`` bytes of UTF-8.
    """
    kind = type(value)  # not isinstance(): an object may claim to be a str through __class__
    if not issubclass(kind, str):
        raise TypeError(f"{what} must be a str, got {kind.__name__}")
    text = str.__str__(cast("str", value))
    if not text:
        raise ValueError(f"{what} must be a non-empty str")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} must be valid UTF-8 text, as Prometheus label values are: "
            f"{exc.reason} at index {exc.start}"
        ) from None
    if size > MAX_NAME_BYTES:
        raise ValueError(
            f"{what} must be at most {MAX_NAME_BYTES} bytes of UTF-8, got {size} bytes: "
            f"{shown(text)}"
        )
    return text


def check_bool(value: object, what: str) -> bool:
    """Return ``value`` if it is a ``bool``.

    Raises:
        TypeError: it is not.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, got {type(value).__name__}")
    return value


def check_count(value: object, what: str, *, optional: bool = False) -> int | None:
    """Return ``value`` as a plain ``int`` from 1 to ``MAX_COUNT`` (or ``None``, if ``optional``).

    Raises:
        TypeError: ``value`` is not an ``int`` (nor ``None``, when ``optional``); a ``bool`` is
            not a count.
        ValueError: it is less than 1 or more than ``MAX_COUNT``.
    """
    if value is None and optional:
        return None
    kind = type(value)
    if issubclass(kind, bool) or not issubclass(kind, int):
        rule = "an int or None" if optional else "an int"
        raise TypeError(f"{what} must be {rule}, got {kind.__name__}")
    count = int.__int__(cast("int", value))
    if count < 1:
        raise ValueError(f"{what} must be at least 1, got {shown(count)}")
    if count > MAX_COUNT:
        raise ValueError(f"{what} must be at most {MAX_COUNT} (sys.maxsize), got {shown(count)}")
    return count


def check_seconds(value: object, what: str, *, zero: bool) -> float:
    """Return ``value`` as a float if it is a number of seconds above 0.

    With ``zero``, 0 is allowed and the number must be finite (a batch window); without, any
    positive number is (an interval to sleep). An int too large for a float is neither.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: it is out of range, NaN, or an int too large for a float.
    """
    seconds = _float(value, what, "a number of seconds")
    if zero:
        if not 0 <= seconds < math.inf:
            raise ValueError(f"{what} must be a finite number of seconds >= 0, got {shown(value)}")
    elif not seconds > 0:
        raise ValueError(f"{what} must be positive, got {shown(value)}")
    return seconds


def check_timeout(value: object, what: str = "timeout") -> float | None:
    """Return ``value`` as seconds to wait for a thread, or ``None`` for "as long as it takes".

    A positive number; one longer than ``threading`` can wait (``threading.TIMEOUT_MAX``, some
    292 years: ``math.inf`` too) is ``None``, where ``threading`` would raise ``OverflowError``.

    Raises:
        TypeError: ``value`` is neither ``None`` nor a number.
        ValueError: it is not positive, or NaN.
    """
    if value is None:
        return None
    seconds = check_seconds(value, what, zero=False)
    return None if seconds >= threading.TIMEOUT_MAX else seconds


def check_state(value: object, what: str) -> State:
    """Return fluxgate's own ``State`` string that ``value`` spells.

    A ``str`` subclass (an ``(str, Enum)`` member, say) is read as the characters it holds and
    mapped onto fluxgate's plain ``str``: that is what gets exported, never its ``str()``.

    Raises:
        ValueError: ``value`` does not spell one of fluxgate's six states; the message names
            ``what``.
    """
    if issubclass(type(value), str):
        state = _CANONICAL.get(str.__str__(cast("str", value)))
        if state is not None:
            return state
    raise ValueError(f"{what} must be one of {', '.join(ALL_STATES)}; got {shown(value)}")


def check_signal(signal: object) -> Signal:
    """Return ``signal`` as a plain ``Signal`` between two known states, at a finite time.

    What is returned is what gets queued: a ``Signal`` (not a subclass) whose states are
    fluxgate's own strings and whose ``timestamp`` is a plain finite ``float``. ``signal`` itself
    when it is that already; otherwise a new one, each field read once.

    Raises:
        TypeError: ``signal`` is not a ``fluxgate.signal.Signal``, or its ``timestamp`` is not
            a number.
        ValueError: its ``old_state`` or ``new_state`` is not one of fluxgate's six states, or
            its ``timestamp`` is infinite, NaN or too large for a float.
    """
    if not issubclass(type(signal), Signal):
        raise TypeError(
            f"PrometheusListener expects a fluxgate.signal.Signal, got {type(signal).__name__}"
        )
    given = cast("Signal", signal)
    old = check_state(given.old_state, "Signal.old_state")
    new = check_state(given.new_state, "Signal.new_state")
    at = check_timestamp(given.timestamp)
    plain = (
        type(given) is Signal
        and type(given.old_state) is str
        and type(given.new_state) is str
        and type(given.timestamp) is float
    )
    # A plain Signal of plain values holds what the checks returned, as they returned it.
    return given if plain else Signal(old_state=old, new_state=new, timestamp=at)


def check_timestamp(timestamp: object) -> float:
    """Return ``timestamp`` as a plain ``float`` if it is a finite number of seconds.

    Raises:
        TypeError: it is not an ``int`` or a ``float`` (a ``bool`` is neither).
        ValueError: it is infinite, NaN, or an int too large for a float.
    """
    at = _float(timestamp, "Signal.timestamp", "a number of seconds")
    if not math.isfinite(at):
        raise ValueError(f"Signal.timestamp must be finite, got {shown(at)}")
    return at


def check_registry(value: object, what: str = "registry") -> CollectorRegistry | None:
    """Return ``value`` if it is ``None`` or a prometheus_client ``CollectorRegistry``.

    Raises:
        TypeError: it is neither.
    """
    if value is None or issubclass(type(value), CollectorRegistry):
        return cast("CollectorRegistry | None", value)
    raise TypeError(
        f"{what} must be a prometheus_client CollectorRegistry or None, got {type(value).__name__}"
    )


def check_path(value: object, what: str = "path") -> str | None:
    """Return ``value`` as a plain ``str`` if it is ``None``, a ``str`` or a str ``os.PathLike``.

    Not an ``int``: ``os.path`` would take it for a file descriptor.

    Raises:
        TypeError: it is none of those (``bytes`` included), or its ``__fspath__`` did not
            return a ``str``.
    """
    if value is None:
        return None
    kind = type(value)
    if issubclass(kind, str):
        return str.__str__(cast("str", value))
    if isinstance(value, os.PathLike):
        text: object = os.fspath(cast("os.PathLike[str]", value))  # may be bytes after all
        if type(text) is str:
            return text
    raise TypeError(f"{what} must be a str, an os.PathLike or None, got {kind.__name__}")


def check_target(target: object) -> None:
    """Raise unless ``target`` has what the consumer reads of a listener's target.

    That is a ``str`` ``name``, an ``int`` ``closed_seq``, a ``fold`` hook (or ``None``) and a
    ``write`` method (``_apply.Target``); a listener's own target has them.

    Raises:
        TypeError: it lacks one of them.
    """
    fold = getattr(target, "fold", 0)
    if not (
        type(getattr(target, "name", None)) is str
        and type(getattr(target, "closed_seq", None)) is int
        and (fold is None or callable(fold))
        and callable(getattr(target, "write", None))
    ):
        raise TypeError(
            "target must be a listener's target (a str name, an int closed_seq, a fold hook or "
            f"None, and a write method), got {type(target).__name__}"
        )


def check_sink(sink: object) -> None:
    """Raise unless ``sink`` has a callable ``write``.

    Raises:
        TypeError: it has none.
    """
    if not callable(getattr(sink, "write", None)):
        raise TypeError(f"sink must have a write(transitions) method, got {type(sink).__name__}")


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
        numbers: set[float] = set()
        for item in items:  # the breaker's own: what does not fit is left out, never raised
            try:
                number = _float(item, "threshold", "a number")
            except (TypeError, ValueError):
                continue
            if 0 < number < math.inf:
                numbers.add(number)
        return tuple(sorted(numbers))
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise TypeError(
            f"slow_thresholds must be an iterable of numbers, got {type(given).__name__}"
        )
    out: set[float] = set()
    for value in cast("Iterable[object]", given):
        if not _is_number(value):
            raise TypeError(f"slow_thresholds must hold numbers, got {type(value).__name__}")
        number = _float(value, "slow_thresholds", "numbers")
        if not 0 < number < math.inf:
            raise ValueError(f"slow_thresholds must be positive and finite, got {shown(value)}")
        out.add(number)
    return tuple(sorted(out))


def check_choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` as a plain ``str`` if it is one of ``choices`` (an anyio backend's name).

    A ``str`` subclass is read as its characters, as in ``check_name``.

    Raises:
        TypeError: ``value`` is not a ``str``.
        ValueError: it is not one of ``choices``.
    """
    kind = type(value)
    if not issubclass(kind, str):
        raise TypeError(f"{what} must be a str, got {kind.__name__}")
    text = str.__str__(cast("str", value))
    if text not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {shown(text)}")
    return text


def check_buckets(value: object) -> tuple[float, ...]:
    """Return a histogram's bucket bounds as plain floats, ``+Inf`` last.

    Given: a non-empty iterable of finite numbers above 0, strictly increasing (``+Inf`` may end
    it; it is added when absent).

    Raises:
        TypeError: ``value`` is not an iterable of numbers.
        ValueError: it is empty, or a bound is not above 0, NaN, infinite before the end, or not
            above the one before it.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"buckets must be an iterable of numbers, got {type(value).__name__}")
    bounds: list[float] = []
    for item in cast("Iterable[object]", value):
        if not _is_number(item):
            raise TypeError(f"buckets must hold numbers, got {type(item).__name__}")
        bound = _float(item, "buckets", "numbers")
        if bounds and bounds[-1] == math.inf:
            raise ValueError("buckets must end with +Inf if they hold it, got a bound after it")
        if not bound > 0:
            raise ValueError(f"buckets must be above 0, got {shown(item)}")
        if bounds and not bound > bounds[-1]:
            raise ValueError(
                f"buckets must be strictly increasing, got {shown(bound)} after {shown(bounds[-1])}"
            )
        bounds.append(bound)
    if not bounds:
        raise ValueError("buckets must hold at least one bound")
    if bounds[-1] != math.inf:
        bounds.append(math.inf)
    return tuple(bounds)
