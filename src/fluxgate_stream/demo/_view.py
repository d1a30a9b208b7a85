"""The demo's terminal view: one rich table row per circuit, read back from the exported metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from fluxgate_stream.demo._report import CircuitReport, DemoReport

__all__ = ["render_frame"]

_STYLES = {
    "closed": "bold green",
    "open": "bold red",
    "half_open": "bold yellow",
    "forced_open": "bold magenta",
    "metrics_only": "bold cyan",
    "disabled": "dim",
}
_OPERATOR_STATES = ("forced_open", "metrics_only", "disabled")
#: The least console width that shows every column.
WIDE = 128


def _into(circuit: CircuitReport, *states: str) -> int:
    """Exported transitions of ``circuit`` into any of ``states``."""
    return sum(
        n for pair, n in circuit.exported_transitions.items() if pair.split("->")[1] in states
    )


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _millis(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _calls(circuit: CircuitReport) -> list[str]:
    """The call columns: calls/s, rejected/s and p95 in ms, over the report's rate window."""
    rates = circuit.rates
    if rates is None:
        return ["-", "-", "-"]
    return [_rate(rates.per_second), _rate(rates.rejected_per_second), _millis(rates.p95)]


def render_frame(report: DemoReport, *, width: int = WIDE) -> Table:
    """Render one frame: every circuit's exported state, transition counts, time open and calls.

    The call columns come from ``circuit_breaker_calls_total`` and
    ``circuit_breaker_call_duration_seconds`` over the report's ``rate_window``: calls of every
    kind per second, rejected (``not_permitted``) calls per second, and the p95 duration of the
    calls that ran, in milliseconds. Below ``WIDE`` columns of ``width``, the frame leaves out
    how each breaker runs, its dependency's phase and the call columns.

    Example:
        >>> from fluxgate_stream.demo._report import CallRates, CircuitReport, DemoReport
        >>> from rich.console import Console
        >>> circuit = CircuitReport(
        ...     "api", "task", "outage", "open", "open", {"closed->open": 1},
        ...     {"closed->open": 1}, {"ok": 5, "failed": 5, "rejected": 2},
        ...     rates=CallRates(per_second=4.0, rejected_per_second=0.6667, p95=0.0123),
        ... )
        >>> report = DemoReport("http://127.0.0.1:8000/metrics", "asyncio", 3.0, 1.0, (circuit,))
        >>> for width in (80, 128):
        ...     console = Console(width=width, color_system=None)
        ...     with console.capture() as capture:
        ...         console.print(render_frame(report, width=width))
        ...     [line.split() for line in capture.get().splitlines() if "api" in line]
        [['api', 'open', '1', '0', '0', '0', '-']]
        [['api', 'task', 'outage', 'open', '1', '0', '0', '0', '-', '4.0', '0.7', '12.3']]
    """
    wide = width >= WIDE
    running = (
        f"running {report.elapsed:.1f} s"
        if report.stopped_by is None
        else f"stopped by {report.stopped_by} after {report.elapsed:.1f} s"
    )
    caption = f"state and transitions as exported on {report.url}"
    if wide:
        caption = (
            f"state, transitions and calls as exported on {report.url}; "
            f"calls/s, rejected/s and p95 over the last {report.rate_window:.1f} s"
        )
    table = Table(
        title=f"fluxgate-stream demo on {report.backend}: {running} (schedule x{report.speed:g})",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
    )
    table.add_column("circuit", style="bold", no_wrap=True)
    if wide:
        table.add_column("runs", no_wrap=True)
        table.add_column("dependency", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for header in ("opened", "half-open", "closed", "operator", "% open"):
        table.add_column(header, justify="right", no_wrap=True)
    if wide:
        for header in ("calls/s", "rejected/s", "p95 ms"):
            table.add_column(header, justify="right", no_wrap=True)
    for circuit in report.circuits:
        state = circuit.exported_state or "?"
        row: list[str | Text] = [circuit.name]
        if wide:
            row += [circuit.runs_on, circuit.phase]
        row.append(Text(state, style=_STYLES.get(state, "bold red reverse")))
        row += [
            str(_into(circuit, "open")),
            str(_into(circuit, "half_open")),
            str(_into(circuit, "closed")),
            str(_into(circuit, *_OPERATOR_STATES)),
            _percent(circuit.open_share),
        ]
        if wide:
            row += _calls(circuit)
        table.add_row(*row)
    return table
